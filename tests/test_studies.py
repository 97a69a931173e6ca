"""Studies: every definition builds valid configs; a tiny study writes finite results, tables
and plots; an interrupted study resumes without redoing finished groups."""
import json
import math
import pathlib

import numpy as np
import pytest

from jaxrnn import cells, checkpoint, studies
from jaxrnn.report import study as study_report, study_tables
from jaxrnn.errors import ConfigError


@pytest.mark.parametrize("name,budget", [(name, budget) for name in sorted(studies.STUDIES)
                                         for budget in studies.STUDY_BUDGETS[name]])
def test_every_study_definition_builds_valid_configs(tmp_path, name, budget):
    study = studies.make_study(name, budget, vocab_size=65)
    assert study.groups and len({group.name for group in study.groups}) == len(study.groups)
    for group in study.groups:
        config = studies.group_config(study, group, tmp_path)       # validates, or raises
        assert config.output_dir == str(tmp_path / group.name)
        assert all(key in study.table_keys or key in ("sizing",) for key in group.labels
                   if key != "part") or study.explore
    if name == "architectures":
        counts = {group.labels["arch"]: studies.param_count(
            cells.resolve(group.labels["arch"]), 65, group.labels["hidden_size"])
            for group in study.groups
            if group.labels["sizing"] == "equal_params"}
        assert max(counts.values()) / min(counts.values()) < 1.05     # equal parameter counts


@pytest.mark.parametrize("arch", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_param_count_equals_the_initialised_models(arch, num_layers):
    cell = cells.resolve(arch)
    for hidden_size in (5, 64, 269):
        assert studies.param_count(cell, 65, hidden_size, num_layers) == \
            studies._counted_params(cell, 65, hidden_size, num_layers)


def test_hidden_for_params_inverts_param_count():
    for arch in ("rnn", "lstm", "gru"):
        cell = cells.resolve(arch)
        target = studies.param_count(cells.resolve("lstm"), 65, 100)
        size = studies.hidden_for_params(cell, 65, target)
        best = min(range(1, 400), key=lambda h: abs(studies.param_count(cell, 65, h) - target))
        assert size == best


def _tiny_study():
    base = dict(batch_size=4, seq_len=8, num_steps=4, steps_per_call=2, eval_every=2,
                log_every=2, warmup_steps=1, eval_batch_size=2, dropout=0.0, hidden_size=8,
                sample_length=20)
    groups = (studies.Group("rnn", {"arch": "rnn"}, {"arch": "rnn"}, (1e-2, 3e-2), (1.0, 5.0)),
              studies.Group("gru", {"arch": "gru"}, {"arch": "gru"}, (1e-2,)),
              studies.Group("gru-again", {"arch": "gru-again"}, {"arch": "gru"}, (1e-2,),
                            same_as="gru"))
    return studies.Study("tiny?", base, groups, ("arch", "learning_rate", "clip_norm"),
                         best_lr=True,
                         plots=("curves", "curves_wall", "grad_norms"), samples=True)


def test_tiny_study_writes_finite_results_and_resumes_without_redoing(tmp_path, small_text):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(small_text, encoding="utf-8")
    study, out = _tiny_study(), tmp_path / "study"
    logs = []
    results = studies.run(study, out, seeds=(0, 1), overrides={"data": str(corpus)},
                          log=logs.append)
    study_report.write_report(study, results, out, command="test")
    for name in ("results.json", "table.md", "curves.png", "curves_wall.png", "grad_norms.png"):
        assert (out / name).stat().st_size > 0
    payload = json.loads((out / "results.json").read_text())
    assert len(payload["runs"]) == 2 * 2 * 2 + 2 + 2          # rnn: 2 lr x 2 clip x 2 seeds
    for run in payload["runs"]:
        for value in (run["test"]["loss"], run["val"]["loss"], run["train_loss"],
                      run["max_grad_norm"], run["seconds"], run["chars_per_second"]):
            assert value is not None and math.isfinite(value) and value > 0
        assert 0.0 <= run["clip_fraction"] <= 1.0 and run["diverged"] is False
        metrics = study_report.read_metrics(out / run["group"] / "runs" / run["run"]
                                      / "metrics.jsonl")
        assert [r["step"] for r in metrics["val"]] == [2, 4] and len(metrics["test"]) == 1
    assert payload["samples"]["rnn"] and payload["samples"]["gru"]
    table = (out / "table.md").read_text()
    assert "learning rate (best)" in table and table.count("\n| rnn |") == 2   # 2 clip rows
    assert (out / "rnn" / "best" / "checkpoint" / "checkpoint.json").exists()
    # a study with samples keeps every run's tested state, with the run's own settings
    for run in payload["runs"]:
        if run["group"] == "rnn":
            saved = checkpoint.read_metadata(out / "rnn" / "best" / run["run"] / "checkpoint")
            assert saved["run"] == run["run"] and saved["config"]["seed"] == run["seed"]
            assert saved["config"]["learning_rate"] == run["learning_rate"]
            assert saved["best_val_loss"] == run["val"]["loss"]
    assert not (out / "gru-again" / "runs").exists()                  # reported, not retrained

    # An interruption after the first group: its result stays, the others are gone.
    first = (out / "rnn" / studies.RESULT_FILE).read_bytes()
    (out / "gru" / studies.RESULT_FILE).unlink()
    (out / "gru-again" / studies.RESULT_FILE).unlink()
    logs.clear()
    again = studies.run(study, out, seeds=(0, 1), overrides={"data": str(corpus)},
                        log=logs.append)
    assert any("rnn: done earlier" in line for line in logs)
    assert sum("sweep of" in line for line in logs) == 1              # only gru retrained
    assert (out / "rnn" / studies.RESULT_FILE).read_bytes() == first
    np.testing.assert_allclose([run["test"]["loss"] for run in again[1]["runs"]],
                               [run["test"]["loss"] for run in results[1]["runs"]], rtol=1e-6)


def test_explored_finds_main_effects_and_interactions():
    rows = [{"a": a, "b": b, "diverged": False, "test": {"loss": 2.0 + a + 0.1 * b}}
            for a in (0, 1) for b in (0, 1, 2)]
    analysis = study_tables.explored(rows, ("a", "b"), uniform=math.log(65))
    assert analysis["additive_r2"] == pytest.approx(1.0)
    assert [f["best"] for f in analysis["factors"]] == [0, 0]
    assert analysis["factors"][0]["spread"] == pytest.approx(1.0)
    assert analysis["factors"][1]["spread"] == pytest.approx(0.2)
    interacting = [dict(row, test={"loss": 2.0 + row["a"] * row["b"]}) for row in rows]
    assert study_tables.explored(interacting, ("a", "b"), uniform=10.0)["additive_r2"] < 0.9
    diverged = [dict(rows[0], diverged=True)] + rows[1:]
    assert study_tables.explored(diverged, ("a", "b"), uniform=3.0)["factors"][0]["marginal_means"][0] \
        == pytest.approx((3.0 + 2.1 + 2.2) / 3)


def test_plot_runs_launcher_draws_and_rejects_bad_folders(tmp_path, capsys):
    """experiments.plot_runs imported for this test only: its absl flags (--plot, as
    experiments.gradient_flow and experiments.text_quality name theirs) are removed on exit, so
    that other launchers run in this process can define flags of the same names."""
    import importlib
    import sys

    from absl import flags as absl_flags
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(
        "\n".join(json.dumps(record) for record in [
            {"kind": "train", "step": 10, "loss": 3.0, "elapsed_seconds": 1.0},
            {"kind": "val", "step": 10, "loss": 3.1, "elapsed_seconds": 1.5},
            {"kind": "train", "step": 20, "loss": 2.5, "elapsed_seconds": 2.0}]) + "\n")
    out = tmp_path / "curves.png"
    defined_before = set(absl_flags.FLAGS)
    sys.modules.pop("experiments.plot_runs", None)
    plot_runs = importlib.import_module("experiments.plot_runs")
    try:
        absl_flags.FLAGS(["plot_runs", f"--run_dirs={run}", f"--plot={out}"])
        plot_runs.main([])
        assert out.stat().st_size > 1000
        absl_flags.FLAGS(["plot_runs", f"--run_dirs={tmp_path}", f"--plot={out}"])
        with pytest.raises(Exception, match="has no metrics.jsonl"):
            plot_runs.main([])
    finally:
        absl_flags.FLAGS.unparse_flags()
        for name in set(absl_flags.FLAGS) - defined_before:
            delattr(absl_flags.FLAGS, name)
        sys.modules.pop("experiments.plot_runs", None)


def test_wall_time_groups_fit_their_steps_once_and_keep_them(tmp_path, small_text, monkeypatch):
    """A group with a wall-time budget trains as many whole chunks as the measured step time
    allows (two evaluations), every group is timed before any trains, and a resumed study reuses
    the fitted steps (steps.json) instead of timing again."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(small_text, encoding="utf-8")
    timed = []

    def step_seconds(config, num_runs=1, *, log=print):
        timed.append((config.hidden_size, num_runs))
        return 0.01 * config.hidden_size / 8                # H=8: 10 ms, H=16: 20 ms a step

    monkeypatch.setattr(studies.loop, "seconds_per_step", step_seconds)
    base = dict(batch_size=4, seq_len=8, steps_per_call=3, log_every=2, warmup_steps=1,
                eval_batch_size=2, dropout=0.0, sample_length=5)
    groups = tuple(studies.Group(f"H{size}", {"hidden_size": size}, {"hidden_size": size},
                                 (1e-2,), seeds=(0,), wall_seconds=0.25) for size in (8, 16))
    study = studies.Study("budget?", base, groups, ("hidden_size", "steps"))
    logs = []
    results = studies.run(study, tmp_path / "out", overrides={"data": str(corpus)},
                          log=logs.append)
    assert timed == [(8, 1), (16, 1)]
    assert logs.index(next(line for line in logs if "[1/2]" in line)) > \
        logs.index(next(line for line in logs if "timing H16" in line))   # timed, then trained
    # 0.25 s at 10 ms: 25 steps -> 24 (whole 3-step chunks, two halves); at 20 ms: 12.
    assert [result["runs"][0]["steps"] for result in results] == [24, 12]
    assert [result["config"]["eval_every"] for result in results] == [12, 6]
    steps_file = tmp_path / "out" / "H8" / studies.STEPS_FILE
    assert json.loads(steps_file.read_text())["num_steps"] == 24
    (tmp_path / "out" / "H8" / studies.RESULT_FILE).unlink()
    timed.clear()
    again = studies.run(study, tmp_path / "out", overrides={"data": str(corpus)}, log=print)
    assert timed == [] and again[0]["runs"][0]["steps"] == 24


# ---------------------------------------------------------------------------------------------
# Learning rates bracketed by the runner; later groups derive their rate and dropout
# ---------------------------------------------------------------------------------------------
def _fake_trainer(val_of_rate, trained, stalls_above=None):
    """A `studies.run_group` stand-in: each run's validation loss is ``val_of_rate(rate)`` (plus
    a seed offset), no training; ``trained`` collects the groups it was asked to train. A
    trained-to-best group (``patience``) at a rate above ``stalls_above`` stalls: its best is
    the first evaluation and it stops at the second, at a loss of 9."""
    def run_group(study, group, config, seeds, *, log=print):
        trained.append((group.name, tuple(group.learning_rates), config.dropout))
        stall = group.patience and stalls_above is not None and \
            group.learning_rates[0] > stalls_above
        runs = [{"run": f"lr{rate:g}-seed{seed}", "seed": seed, "learning_rate": rate,
                 "best_step": config.eval_every if stall else config.num_steps,
                 "steps": 2 * config.eval_every if stall else config.num_steps,
                 "clip_norm": 5.0, "diverged": False, "seconds": 1.0, "chars_per_second": 1.0,
                 "val": {"loss": 9.0 if stall else val_of_rate(rate, config.dropout)
                         + 1e-3 * seed},
                 "test": {"loss": val_of_rate(rate, config.dropout)}}
                for rate in group.learning_rates for seed in seeds]
        result = {"group": group.name, "labels": group.labels, "config": config.to_dict(),
                  "runs": runs, "note": group.note}
        studies._write_json(pathlib.Path(config.output_dir) / studies.RESULT_FILE, result)
        return result
    return run_group


def _bracket_study(grid=(1e-3, 3e-3, 1e-2), bracket=2):
    rate_group = studies.Group("lr", {"part": "lr"}, {"dropout": 0.25}, grid, seeds=(0,),
                               bracket=bracket)
    dropout_groups = tuple(
        studies.Group(f"d{dropout:g}", {"part": "trained", "dropout": dropout},
                      {"dropout": dropout, "num_steps": 40, "eval_every": 10}, (), seeds=(0,),
                      patience=2, retry_lower=1, derive=studies.best_rate_of("lr"))
        for dropout in (0.0, 0.5))
    seeds_group = studies.Group("seeds", {"part": "trained"}, {}, (), seeds=(1, 2),
                                derive=studies.best_setting_of(("d0", "d0.5"), "dropout", "lr"))
    return studies.Study("bracket?", {"hidden_size": 4}, (rate_group,) + dropout_groups
                         + (seeds_group,), ("part", "dropout", "learning_rate"), best_lr=True)


@pytest.mark.parametrize("optimum,extended,status", [
    (3e-3, [], "bracketed"),                          # interior best: no extension
    (0.05, [3e-2, 9e-2], "bracketed"),                # top edge, closed by the second extension
    (1e-4, [1e-3 / 3, 1e-3 / 9], "bottom edge"),      # bottom edge, still open after two
])
def test_runner_extends_a_learning_rate_grid_whose_best_is_on_its_edge(
        tmp_path, monkeypatch, optimum, extended, status):
    trained = []
    monkeypatch.setattr(studies, "run_group", _fake_trainer(
        lambda rate, dropout: 2.0 + math.log(rate / optimum) ** 2 + dropout, trained))
    results = studies.run(_bracket_study(), tmp_path, seeds=(0,), log=lambda _: None)
    extensions = [rates[0] for name, rates, _ in trained if name.startswith("lr-lr")]
    np.testing.assert_allclose(extensions, extended, rtol=1e-6)
    assert [result["bracket_of"] for result in results if "bracket_of" in result] \
        == ["lr"] * len(extended)
    losses = studies.mean_val_by_rate([r for r in results if r["group"].startswith("lr")])
    best = min(losses, key=losses.get)
    assert studies.bracket_status(list(losses), best) == status
    # The later groups take the bracketed rate, and the seeds group the dropout that validated
    # best (0: the fake loss grows with dropout); the table says how each rate was chosen.
    derived = [(name, rates, dropout) for name, rates, dropout in trained
               if not name.startswith("lr")]
    assert [rates for _, rates, _ in derived] == [(best,)] * 3
    assert derived[-1] == ("seeds", (best,), 0.0)
    table = study_tables.table(_bracket_study(), results)
    assert f"{status} (" in table and "dropout 0 validated best of 0, 0.5" in table
    # Resuming trains nothing again, extensions included.
    trained.clear()
    again = studies.run(_bracket_study(), tmp_path, seeds=(0,), log=lambda _: None)
    assert trained == [] and len(again) == len(results)


def test_a_bracketing_group_needs_two_rates(tmp_path, monkeypatch):
    monkeypatch.setattr(studies, "run_group", _fake_trainer(lambda rate, dropout: 2.0, []))
    with pytest.raises(ConfigError, match="at least two"):
        studies.run(_bracket_study(grid=(1e-3,)), tmp_path, seeds=(0,), log=lambda _: None)


def test_table_reports_intervals_and_tested_differences():
    def group(name, losses):
        return {"group": name, "labels": {"arch": name}, "config": {"batch_size": 1,
                                                                    "seq_len": 1},
                "runs": [{"run": f"s{seed}", "seed": seed, "learning_rate": 1e-3,
                          "diverged": seed == 9, "val": {"loss": loss}, "test": {"loss": loss},
                          "seconds": 1.0, "chars_per_second": 1.0}
                         for seed, loss in enumerate(losses)]}
    study = studies.Study("t?", {}, (), ("arch",))             # compared with the best of all
    text = study_tables.table(study, [group("a", [1.0, 1.1, 1.2]), group("b", [2.0, 2.1, 2.2]),
                                group("c", [1.15, 1.3, 1.05]), group("d", [0.5])])
    lines = {line.split(" | ")[0][2:]: line for line in text.splitlines()[2:]}
    assert "| best |" in lines["a"] and "[0.8516, 1.3484]" in lines["a"]   # t(2) = 4.303
    assert "worse (p=0.0" in lines["b"]
    assert "not distinguishable (p=" in lines["c"]
    assert "untested (< 2 seeds)" in lines["d"]          # one seed: never the reference either
    assert "1.1000 ± 0.1000" in lines["a"]                # sample standard deviation (ddof 1)


def test_report_only_loads_the_finished_groups_and_trains_nothing(tmp_path, monkeypatch):
    trained = []
    monkeypatch.setattr(studies, "run_group", _fake_trainer(
        lambda rate, dropout: 2.0 + math.log(rate / 0.05) ** 2 + dropout, trained))
    studies.run(_bracket_study(), tmp_path, seeds=(0,), log=lambda _: None)
    for name in ("seeds", "lr-lr0.09"):                # a later group and an extension unfinished
        (tmp_path / name / studies.RESULT_FILE).unlink()
    trained.clear()
    results = studies.run(_bracket_study(), tmp_path, seeds=(0,), log=lambda _: None,
                          train=False)
    assert trained == []
    assert [result["group"] for result in results] == ["lr", "d0", "d0.5"]


def test_groups_trains_only_the_named_groups_and_loads_the_finished_others(tmp_path,
                                                                            monkeypatch):
    trained = []
    monkeypatch.setattr(studies, "run_group", _fake_trainer(
        lambda rate, dropout: 2.0 + math.log(rate / 0.05) ** 2 + dropout, trained))
    with pytest.raises(ConfigError, match="group d0 needs the results of group lr, which is "
                                          "not trained yet; add it to --groups"):
        studies.run(_bracket_study(), tmp_path, seeds=(0,), log=lambda _: None, only=("d0",))
    assert trained == []
    results = studies.run(_bracket_study(), tmp_path, seeds=(0,), log=lambda _: None,
                          only=("lr", "d0.5"))       # the rate group with its extensions
    assert [name for name, _, _ in trained] == ["lr", "lr-lr0.03", "lr-lr0.09", "d0.5"]
    assert [result["group"] for result in results] == ["lr", "lr-lr0.03", "lr-lr0.09", "d0.5"]
    trained.clear()
    with pytest.raises(ConfigError, match="group seeds needs the results of group d0"):
        studies.run(_bracket_study(), tmp_path, seeds=(0,), log=lambda _: None,
                    only=("seeds",))                 # d0 is not trained
    with pytest.raises(ConfigError, match="names no group d1 of this study; choose among lr, "):
        studies.run(_bracket_study(), tmp_path, seeds=(0,), log=lambda _: None, only=("d1",))
    results = studies.run(_bracket_study(), tmp_path, seeds=(0,), log=lambda _: None,
                          only=("d0", "seeds"))
    assert [name for name, _, _ in trained] == ["d0", "seeds"]
    assert [result["group"] for result in results][-2:] == ["d0.5", "seeds"]
    # A KeyError from a bug inside a derive function is that bug, not a group left out.
    study = _bracket_study()
    broken = study.groups[-1]._replace(
        derive=lambda done: {"learning_rates": (done["d0"][0]["config"]["no_such_field"],)})
    with pytest.raises(KeyError, match="no_such_field"):
        studies.run(study._replace(groups=study.groups[:-1] + (broken,)), tmp_path / "broken",
                    seeds=(0,), log=lambda _: None)


def test_a_trained_group_that_stalls_at_its_bracketed_rate_is_retried_lower(tmp_path,
                                                                             monkeypatch):
    """The short-run bracket picks 0.03; at that rate every long run stalls (best at its first
    evaluation), so each dropout group is retried at 0.01 and the seeds group takes the retry's
    rate; a group that trains normally is not retried."""
    trained = []
    monkeypatch.setattr(studies, "run_group", _fake_trainer(
        lambda rate, dropout: 2.0 + math.log(rate / 0.05) ** 2 + dropout, trained,
        stalls_above=0.02))
    results = studies.run(_bracket_study(), tmp_path, seeds=(0,), log=lambda _: None)
    names = [name for name, _, _ in trained]
    assert names == ["lr", "lr-lr0.03", "lr-lr0.09", "d0", "d0-lr0.01", "d0.5", "d0.5-lr0.01",
                     "seeds"]
    assert trained[-1] == ("seeds", (0.01,), 0.0)
    retried = [result for result in results if result.get("retry_of")]
    assert [result["retry_of"] for result in retried] == ["d0", "d0.5"]
    assert "0.03 stalled in the long run" in study_tables.table(_bracket_study(), results)
    # Nothing stalls when the rate trains: no retry.
    trained.clear()
    monkeypatch.setattr(studies, "run_group", _fake_trainer(
        lambda rate, dropout: 2.0 + math.log(rate / 0.05) ** 2 + dropout, trained))
    studies.run(_bracket_study(), tmp_path / "stable", seeds=(0,), log=lambda _: None)
    assert not any("-lr0.01" in name for name, _, _ in trained)


def _fake_result(loss, rate=0.03, **fields):
    config = {name: 0.0 for name in studies._REGULARISER_FIELDS}
    config.update({"optimizer": "adam", **fields})
    return {"config": config, "runs": [{"learning_rate": rate, "diverged": False,
                                        "val": {"loss": loss + offset}}
                                       for offset in (-0.01, 0.0, 0.01)]}


def test_combined_regularisers_merges_the_methods_that_beat_the_baseline():
    done = {"lr": [_fake_result(2.0, rate=0.01), _fake_result(1.9, rate=0.03),
                   _fake_result(2.1, rate=0.09)],
            "base": [_fake_result(1.60, dropout=0.25)],
            "recurrent": [_fake_result(1.55, dropout=0.25, recurrent_dropout=0.25)],
            "weight_drop": [_fake_result(1.58, dropout=0.25, weight_drop=0.25)],
            "adamw": [_fake_result(1.70, dropout=0.25, optimizer="adamw", weight_decay=0.1)]}
    derive = studies.combined_regularisers("base", ("recurrent", "weight_drop", "adamw"), "lr")
    fields = derive(done)
    assert fields["learning_rates"] == (0.03,) and fields["same_as"] is None
    assert fields["overrides"]["recurrent_dropout"] == 0.25
    assert fields["overrides"]["weight_drop"] == 0.25 and fields["overrides"]["dropout"] == 0.25
    assert "optimizer" not in fields["overrides"] and "weight_decay" not in fields["overrides"]
    assert "recurrent, weight_drop" in fields["note"]
    # of three winners only the best two: AdamW (1.52) joins recurrent dropout, weight-drop leaves
    done["adamw"] = [_fake_result(1.52, dropout=0.25, optimizer="adamw", weight_decay=0.1)]
    fields = derive(done)
    assert fields["overrides"]["recurrent_dropout"] == 0.25
    assert fields["overrides"]["weight_drop"] == 0.0
    assert fields["overrides"]["optimizer"] == "adamw"
    assert fields["overrides"]["weight_decay"] == 0.1
    assert "adamw, recurrent (the 2 best" in fields["note"]
    done["adamw"] = [_fake_result(1.70, dropout=0.25, optimizer="adamw", weight_decay=0.1)]
    # nothing beats the baseline: the best single method, reported from its own runs
    done["base"] = [_fake_result(1.50, dropout=0.25)]
    fields = derive(done)
    assert fields["same_as"] == "recurrent" and "no method beat base" in fields["note"]
    # applied to another model (the alternative size) it is trained, at that model's own rate
    done["lr-L2"] = [_fake_result(1.8, rate=0.01), _fake_result(1.9, rate=0.03)]
    fields = studies.combined_regularisers("base", ("recurrent", "weight_drop", "adamw"),
                                           "lr-L2", reuse=False)(done)
    assert fields["same_as"] is None and fields["learning_rates"] == (0.01,)
    assert fields["overrides"]["recurrent_dropout"] == 0.25


def test_a_group_stalls_when_one_run_peaks_in_the_first_eighth_of_its_cap():
    def result(*best_steps):
        return {"config": {"num_steps": 4800, "eval_every": 300},
                "runs": [{"best_step": step} for step in best_steps]}
    assert studies.stalled(result(600, 4800, 4500))          # one run peaked at step 600 of 4800
    assert studies.stalled(result(300))
    assert not studies.stalled(result(900, 4800, 4800))      # past the first eighth: it trained
    assert not studies.stalled(result(None, None))           # not a trained-to-best group


def test_a_grid_that_diverges_at_every_rate_is_extended_downwards():
    inf = float("inf")
    assert studies.next_rate({0.03: inf, 0.1: inf, 0.3: inf}) == pytest.approx(0.01)
    assert studies.next_rate({0.01: 2.0, 0.03: inf, 0.1: inf}) == pytest.approx(0.01 / 3)
    assert studies.next_rate({0.01: 2.5, 0.03: 2.0, 0.1: inf}) is None      # bracketed
    assert studies.lowest_loss_rate({0.3: inf, 0.03: inf}) == 0.03


def test_lower_too_trains_a_third_of_the_rate_and_reuse_reports_the_better(tmp_path, monkeypatch):
    """A group with ``lower_too`` is trained at its rate and a third of it even without a stall;
    a later group deriving with ``reuse`` reports the runs of whichever validated better."""
    trained = []
    monkeypatch.setattr(studies, "run_group", _fake_trainer(
        lambda rate, dropout: 2.0 + math.log(rate / 0.011) ** 2 + dropout, trained))
    lr = studies.Group("lr", {"part": "lr"}, {"dropout": 0.0}, (1e-3, 3e-3, 1e-2, 3e-2),
                       seeds=(0,))
    long = studies.Group("long", {"part": "trained", "dropout": 0.0},
                         {"dropout": 0.0, "num_steps": 40, "eval_every": 10}, (), seeds=(0,),
                         patience=2, retry_lower=1, lower_too=True,
                         derive=studies.best_rate_of("lr"))
    again = studies.Group("again", {"part": "trained", "dropout": 0.5},
                          {"dropout": 0.0, "num_steps": 40, "eval_every": 10}, (), seeds=(0,),
                          patience=2, derive=studies.best_rate_of("long", long_runs=True,
                                                                  reuse=True))
    study = studies.Study("?", {}, (lr, long, again), ("part", "dropout", "learning_rate"))
    results = studies.run(study, tmp_path, seeds=(0,), log=lambda _: None)
    assert [name for name, _, _ in trained] == ["lr", "long", "long-lr0.00333"]
    reused = results[-1]
    assert reused["group"] == "again" and reused["runs_dir"] == "long"   # 0.01 beat 0.0033
    assert "also trained at 0.00333" in results[2]["note"]


def test_curve_parts_draw_one_panel_per_part_with_only_its_runs(tmp_path, monkeypatch):
    """``Study.curve_parts``: the curves plot has a panel per listed part, each drawing only the
    runs of that part (the learning-rate phase's runs are left out); without it, one panel."""
    def group(name, part):
        return {"group": name, "labels": {"part": part, "method": name},
                "config": {"batch_size": 4, "seq_len": 8},
                "runs": [{"run": "seed0", "learning_rate": 0.01, "val": {"loss": 1.0}}]}
    results = [group("lr", "lr"), group("a", "trained"), group("b", "trained"),
               group("c", "deep")]
    drawn = []
    monkeypatch.setattr(study_report, "_draw_curves",
                        lambda axis, keys, rows, *rest: drawn.append(
                            sorted(row["method"] for row in rows)))
    study = studies.Study("q?", {}, (), ("part", "method", "learning_rate"),
                          curve_parts=("trained", "deep"))
    study_report.plot_curves(study, results, tmp_path, tmp_path / "curves.png")
    assert drawn == [["a", "b"], ["c"]]
    drawn.clear()
    study_report.plot_curves(study._replace(curve_parts=()), results, tmp_path,
                             tmp_path / "all.png")
    assert drawn == [["a", "b", "c", "lr"]]


def test_the_default_preset_reaches_launchers_not_studies_or_the_library(monkeypatch, tmp_path):
    """The 'default' preset (the main job's recipe) applies to a launcher run without --preset;
    `make_config()` and every study group build on `Config`'s field defaults, so changing the
    main job's recipe cannot change a study."""
    from jaxrnn import config as config_lib
    monkeypatch.setitem(config_lib.PRESETS, "default", {"weight_drop": 0.5,
                                                         "learning_rate": 0.02})
    assert config_lib.make_config("default").weight_drop == 0.5
    assert config_lib.make_config().weight_drop == 0.0
    assert config_lib.make_config().learning_rate == config_lib.Config().learning_rate
    study = studies.make_study("regularisation", "quick", 65)
    for group in study.groups:
        config = studies.group_config(study, group, tmp_path)
        assert config.weight_drop == group.overrides.get("weight_drop", 0.0), group.name


@pytest.mark.parametrize("name", ["default", "quick", "long"])
def test_every_preset_is_a_valid_config(name):
    """A preset names only `Config` fields, with values `validate` accepts (a typo in a preset,
    e.g. ``weight_dorp``, would only surface when a user runs it)."""
    from jaxrnn import config as config_lib
    assert name in config_lib.PRESETS
    config = config_lib.make_config(name)
    for field, value in config_lib.PRESETS[name].items():
        assert getattr(config, field) == value
