"""The studies: research questions as data (grids, fixed settings, vmapped axes) and one runner.

A study is a list of `Group` s. A group is one compiled program: a `Config` fixing every shape
(arch, activation, hidden size, layers, sequence length, ...) and the runs it trains at once under
``jax.vmap`` -- every (learning rate, clip threshold, seed) of its grid (`jaxrnn.loop.sweep`).
Axes that change shapes loop over groups. Each study also names how its runs are summarised:
which columns identify a configuration (``table_keys``), whether each configuration is reported
at its best learning rate, and which plots to draw (`jaxrnn.report.study`).

`run_study` trains every group whose ``result.json`` is missing (that file, written atomically
last, is a group's commit mark), so an interrupted study resumes with the groups it has not
finished, and re-running a complete study only redraws its outputs.

Budgets: ``quick`` (tiny models, a few hundred steps: every study in well under 2 minutes on a
2-core CPU) and ``full`` (the sizes the report's tables come from). Each study's full-budget
wall time is measured and stated in BUILD_NOTES.md.
"""
import dataclasses
import functools
import json
import math
import pathlib
from typing import Callable, Dict, NamedTuple, Optional, Tuple

import jax
import numpy as np

from jaxrnn import checkpoint, config as config_lib, data, files, loop, model, runstate, sample
from jaxrnn import cells
from jaxrnn import train as train_lib
from jaxrnn.errors import ConfigError

BUDGETS = ("quick", "full", "to_best")
LR_FACTOR = 3.0   # a learning-rate grid whose best lies on its edge is extended by this factor
REACH_WINDOW, REACH_STREAMS = 200, 16   # characters and streams of the gradient-reach window
RESULT_FILE = "result.json"
STEPS_FILE = "steps.json"   # a wall-time group's fitted steps (`_fitted`)
INF = float("inf")


class Group(NamedTuple):
    """One vmapped program of a study.

    name: folder name inside the study's output folder, e.g. ``"lstm-equal_hidden"``.
    labels: the values that identify the configuration in tables, e.g. ``{"arch": "lstm"}``.
    overrides: `Config` fields of this group on top of the study's base settings.
    learning_rates, clip_norms: the vmapped grid (every pair, times every seed); a derived group
        (``derive``) may leave its learning rates to be resolved.
    seeds: the group's own seeds, e.g. ``(0,)`` for a one-seed grid; None: the study's
        (``--seeds``).
    same_as: the name of an earlier group of the study with the identical program, whose runs
        this group reports under its own labels instead of training them again.
    wall_seconds: a wall-time budget for the group's training steps: its number of steps is
        set from the step time measured on this machine (`fit_to_wall_time`), unless the caller
        overrides ``num_steps``.
    patience: > 0 trains every run to its best validation loss (`jaxrnn.loop.sweep`): the
        group stops once no run improved for this many evaluations (``num_steps`` is the cap)
        and each run is tested from its own best state.
    bracket: how many times the learning-rate grid may be extended (`bracket_learning_rate`):
        while the best rate (lowest mean validation loss over seeds) is the highest (lowest)
        rate tried, a one-rate group at LR_FACTOR times (over) it is trained.
    derive: ``derive(done) -> {Group field: value}``, fields resolved from the results of
        earlier groups when this group is reached (``done``: group name -> its results, the
        group's own and its learning-rate extensions'), e.g. the learning rate an earlier
        group bracketed or the dropout that validated best; ``overrides`` and ``labels`` it
        returns are merged into the group's own.
    retry_lower: how many times a trained group with a run that stalled (`stalled`: best in
        the first eighth of the cap) is trained again at 1 / LR_FACTOR of its rate
        (`retry_at_lower_rates`): a rate bracketed on short runs can be too high for a long one.
    lower_too: with ``retry_lower``, train the group at 1 / LR_FACTOR of its rate whether or not
        it stalled: its long runs then choose between the two rates (a rate bracketed on short
        runs tends to be too high for a long one).
    note: how the group's derived values were chosen, shown in the study's table.
    """

    name: str
    labels: Dict[str, object]
    overrides: Dict[str, object]
    learning_rates: Tuple[float, ...]
    clip_norms: Tuple[float, ...] = (5.0,)
    seeds: Optional[Tuple[int, ...]] = None
    same_as: Optional[str] = None
    wall_seconds: Optional[float] = None
    patience: int = 0
    bracket: int = 0
    retry_lower: int = 0
    lower_too: bool = False
    derive: Optional[Callable] = None
    note: Optional[str] = None


class Study(NamedTuple):
    """A question, its groups, and how its runs are summarised.

    question: one line, the question the study answers.
    base: `Config` fields shared by every group (before the group's own).
    groups: the groups.
    table_keys: run fields (labels, ``learning_rate``, ``clip_norm``) that identify one row of
        the table; the seeds of a row are aggregated as mean and standard deviation.
    best_lr: report each configuration (``table_keys`` minus ``learning_rate``) at the learning
        rate with the lowest mean validation loss, and say so in the table.
    plots: names of `jaxrnn.report.study` plots to draw (its ``PLOTS``).
    samples: keep a sample of each group's best run.
    panels: table keys whose values get a panel each in the gradient-norm plot.
    compare_within: labels whose rows are tested against their own best row (the table's "vs
        best" column, `jaxrnn.report.study_tables.table`); () compares every row with the
        table's best.
    explore: ``(part, factors)`` pairs: the runs labelled ``part`` get a hyper-parameters-explored
        table (`jaxrnn.report.study_tables.explored`) over ``factors``, per arch.
    gradient_reach: measure how far back the gradient of each group's best run reaches
        (`jaxrnn.gradient_flow` on REACH_WINDOW characters of the validation split).
    curve_parts: values of the ``part`` label whose runs the curves plots draw, one panel each,
        e.g. ``("trained", "trained-L2")``; () draws every run in one panel.
    """

    question: str
    base: Dict[str, object]
    groups: Tuple[Group, ...]
    table_keys: Tuple[str, ...]
    best_lr: bool = False
    plots: Tuple[str, ...] = ("curves",)
    samples: bool = False
    gradient_reach: bool = False
    explore: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()
    panels: Tuple[str, ...] = ()
    compare_within: Tuple[str, ...] = ()
    curve_parts: Tuple[str, ...] = ()


# Settings every study shares unless it says otherwise: the data pipeline of the main job, no
# dropout, Adam on a cosine schedule with a short warm-up, global-norm clip 5.
_COMMON = dict(batch_size=32, seq_len=50, dropout=0.0, optimizer="adam", schedule="cosine",
               warmup_steps=50, clip_norm=5.0, eval_batch_size=4, sample_length=300,
               sample_temperature=0.8)

# The budget's model size, steps and evaluation interval.
_SIZES = {
    "quick": dict(hidden=32, steps=150, eval_every=75, log_every=25, small_hidden=16),
    "full": dict(hidden=128, steps=800, eval_every=200, log_every=50, small_hidden=64),
}


def _base(budget, **extra):
    size = _SIZES[budget]
    return {**_COMMON, "num_steps": size["steps"], "eval_every": size["eval_every"],
            "log_every": size["log_every"], **extra}


def _cell(arch):
    """The `jaxrnn.cells.Cell` of an ``arch`` a study definition names (no options)."""
    return cells.resolve(arch)


def _counted_params(cell, vocab_size, hidden_size, num_layers):
    """Number of parameters of `jaxrnn.model.init_params`' model of ``cell`` (a
    `jaxrnn.cells.Cell`), read from its shapes (no arrays allocated)."""
    shapes = jax.eval_shape(lambda: model.init_params(jax.random.key(0), cell, vocab_size,
                                                      hidden_size, num_layers))
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes)))


@functools.lru_cache(maxsize=None)
def _param_polynomial(cell, vocab_size, num_layers):
    """``(a, b, c)`` with parameters = a H^2 + b H + c: every weight is H x H, H x (input) or a
    bias, so the count is quadratic in H; fitted exactly through H = 1, 2, 3."""
    c1, c2, c3 = (_counted_params(cell, vocab_size, size, num_layers) for size in (1, 2, 3))
    a2 = c3 - 2 * c2 + c1                                       # 2a
    a, b = a2 // 2, (c2 - c1) - 3 * (a2 // 2)
    return a, b, c1 - a - b


def param_count(cell, vocab_size, hidden_size, num_layers=1):
    """Number of parameters of a model of ``cell`` (a `jaxrnn.cells.Cell`; no arrays allocated:
    `_param_polynomial`)."""
    a, b, c = _param_polynomial(cell, vocab_size, num_layers)
    return a * hidden_size ** 2 + b * hidden_size + c


def hidden_for_params(cell, vocab_size, target, num_layers=1):
    """The hidden size whose parameter count (for ``cell``, a `jaxrnn.cells.Cell`) is closest to
    ``target``."""
    low, high = 1, 8192
    while low < high:                                   # smallest H with count >= target
        middle = (low + high) // 2
        if param_count(cell, vocab_size, middle, num_layers) < target:
            low = middle + 1
        else:
            high = middle
    return min((low - 1, low), key=lambda size: abs(
        param_count(cell, vocab_size, max(size, 1), num_layers) - target)) or 1


def _architectures(budget, vocab_size):
    hidden = _SIZES[budget]["hidden"]
    target = param_count(_cell("lstm"), vocab_size, hidden)
    groups = []
    for sizing in ("equal_hidden", "equal_params"):
        for arch in ("rnn", "lstm", "gru"):
            size = hidden if sizing == "equal_hidden" else hidden_for_params(
                _cell(arch), vocab_size, target)
            same = "lstm-equal_hidden" if sizing == "equal_params" and arch == "lstm" else None
            groups.append(Group(f"{arch}-{sizing}", {"sizing": sizing, "arch": arch,
                                                     "hidden_size": size},
                                {"arch": arch, "hidden_size": size}, (3e-3, 1e-2),
                                same_as=same))
    return Study("Which cell learns Tiny Shakespeare best, at equal hidden size and at equal "
                 "parameter count?", _base(budget), tuple(groups),
                 ("sizing", "arch", "hidden_size", "learning_rate"), best_lr=True,
                 plots=("curves", "curves_wall"), samples=True, compare_within=("sizing",))


def _activations(budget, vocab_size):
    groups = []
    for activation in ("tanh", "relu", "sigmoid", "identity"):
        for init in ("orthogonal", "identity", "scaled_normal"):
            groups.append(Group(f"{activation}-{init}",
                                {"activation": activation, "recurrent_init": init},
                                {"arch": "rnn", "activation": activation, "recurrent_init": init,
                                 "hidden_size": _SIZES[budget]["small_hidden"]},
                                (1e-3, 3e-3)))
    return Study("How do the vanilla RNN's activation and recurrent initialisation (IRNN) change "
                 "what it learns and how its gradients behave?", _base(budget), tuple(groups),
                 ("activation", "recurrent_init", "learning_rate"), best_lr=True,
                 plots=("curves", "grad_norms"), panels=("activation",))


def _seq_len(budget, vocab_size):
    hidden, steps = _SIZES[budget]["hidden"], _SIZES[budget]["steps"]
    groups = []
    for arch in ("rnn", "lstm"):
        for seq_len in (25, 50, 100, 200):
            # An equal number of training characters: steps * B * T fixed at the T=50 budget's.
            groups.append(Group(f"{arch}-T{seq_len}", {"arch": arch, "seq_len": seq_len},
                                {"arch": arch, "seq_len": seq_len, "hidden_size": hidden,
                                 "num_steps": max(1, steps * 50 // seq_len),
                                 "eval_every": max(1, steps * 50 // seq_len // 4),
                                 "warmup_steps": max(1, 50 * 50 // seq_len)},
                                (3e-3,)))
    return Study("How does the truncated-BPTT window T change the loss, the speed and how far "
                 "back the gradient reaches, at an equal number of training characters?",
                 _base(budget), tuple(groups), ("arch", "seq_len", "learning_rate"),
                 plots=("curves", "curves_chars", "gradient_reach"), gradient_reach=True,
                 compare_within=("arch",))


def _hyperparams(budget, vocab_size):
    small = budget == "quick"
    # Half the steps of the other studies: 63 configurations (27 of them at H=200) must fit the
    # study's 20 minutes on two cores.
    # (quick: 50 steps, evaluated every 25 = steps_per_call, so one compiled chunk length)
    steps = 50 if small else _SIZES[budget]["steps"] // 2
    short = {"num_steps": steps, "eval_every": steps // 2, "warmup_steps": steps // 16}
    groups = []
    for arch in ("rnn", "lstm"):
        for hidden in ((16,) if small else (50, 100, 200)):
            # One seed per grid point: 27 runs per (arch, H) program already.
            groups.append(Group(f"grid-{arch}-H{hidden}",
                                {"part": "grid", "arch": arch, "hidden_size": hidden,
                                 "num_layers": 1, "dropout": 0.0},
                                {"arch": arch, "hidden_size": hidden, **short},
                                (0.1, 0.01, 0.001), (1.0, 5.0, 10.0), seeds=(0,)))
    # The learning rate x hidden size slice at clip 5 with the study's seeds, its rate grid
    # extended once where its best is on an edge.
    for arch in ("rnn", "lstm"):
        for hidden in ((16,) if small else (50, 100, 200)):
            groups.append(Group(f"slice-{arch}-H{hidden}",
                                {"part": "slice", "arch": arch, "hidden_size": hidden,
                                 "num_layers": 1, "dropout": 0.0},
                                {"arch": arch, "hidden_size": hidden, **short},
                                (0.001, 0.01, 0.1), (5.0,), bracket=1))
    hidden = _SIZES[budget]["small_hidden"]
    for layers in ((1, 2) if small else (1, 2, 3)):
        for dropout in ((0.0, 0.5) if small else (0.0, 0.25, 0.5)):
            groups.append(Group(f"depth-L{layers}-dropout{dropout:g}",
                                {"part": "depth", "arch": "lstm", "hidden_size": hidden,
                                 "num_layers": layers, "dropout": dropout},
                                {"arch": "lstm", "hidden_size": hidden, "num_layers": layers,
                                 "dropout": dropout, **short}, (3e-3,)))
    return Study("Which hyper-parameters matter, and do they interact? (the assignment's grid: "
                 "hidden size x learning rate x clip, and depth x dropout)",
                 _base(budget), tuple(groups),
                 ("part", "arch", "hidden_size", "num_layers", "dropout", "learning_rate",
                  "clip_norm"), plots=("heatmaps", "depth"),
                 explore=(("grid", ("hidden_size", "learning_rate", "clip_norm")),
                          ("depth", ("num_layers", "dropout"))), compare_within=("part", "arch"))


def _clipping(budget, vocab_size):
    hidden = _SIZES[budget]["small_hidden"]
    groups = []
    for arch in ("rnn", "lstm"):
        for optimizer, rate in (("sgd", 1.0), ("adam", 1e-2)):
            extra = {"momentum": 0.0} if optimizer == "sgd" else {}
            # Plain SGD's outcomes are bimodal (a run explodes or not): 10 seeds at full.
            seeds = tuple(range(10)) if optimizer == "sgd" and budget == "full" else None
            groups.append(Group(f"{arch}-{optimizer}-global",
                                {"arch": arch, "optimizer": optimizer, "clip_mode": "global"},
                                {"arch": arch, "hidden_size": hidden, "optimizer": optimizer,
                                 "learning_rate": rate, "clip_mode": "global", "warmup_steps": 0,
                                 **extra},
                                (rate,), (1.0, 5.0, 10.0, INF), seeds=seeds))
            groups.append(Group(f"{arch}-{optimizer}-element",
                                {"arch": arch, "optimizer": optimizer, "clip_mode": "element"},
                                {"arch": arch, "hidden_size": hidden, "optimizer": optimizer,
                                 "learning_rate": rate, "clip_mode": "element", "warmup_steps": 0,
                                 **extra},
                                (rate,), (1.0, 5.0), seeds=seeds))
    return Study("What does clipping buy at a high learning rate: divergences, loss spikes and "
                 "gradient norms with no clipping, global-norm clipping at 1, 5, 10 and "
                 "element-wise clipping?", _base(budget, schedule="constant"), tuple(groups),
                 ("arch", "optimizer", "clip_mode", "clip_norm"),
                 plots=("grad_norms",), panels=("arch", "optimizer"),
                 compare_within=("arch", "optimizer"))


def _schedules(budget, vocab_size):
    groups = []
    for schedule in ("constant", "cosine", "exponential"):
        for warmup in (0, 100 if budget == "full" else 15):
            groups.append(Group(f"{schedule}-warmup{warmup}",
                                {"schedule": schedule, "warmup_steps": warmup},
                                {"arch": "lstm", "hidden_size": _SIZES[budget]["hidden"],
                                 "schedule": schedule, "warmup_steps": warmup}, (3e-3,)))
    return Study("Does the learning-rate schedule (constant, cosine, exponential; with or without "
                 "warm-up) change the final loss?", _base(budget), tuple(groups),
                 ("schedule", "warmup_steps"), plots=("curves",))


# The capacity study's grid (hidden size, layers, dropout) and its wall-time budget per model.
_CAPACITY = {
    "quick": dict(grid=((16, 1, 0.0), (32, 1, 0.0), (16, 2, 0.25)), seconds=4.0),
    "full": dict(grid=((384, 1, 0.25), (512, 1, 0.25), (512, 1, 0.0), (384, 2, 0.25)),
                 seconds=360.0),
}


def _capacity(budget, vocab_size):
    groups = []
    for hidden, layers, dropout in _CAPACITY[budget]["grid"]:
        groups.append(Group(f"H{hidden}-L{layers}-dropout{dropout:g}",
                            {"hidden_size": hidden, "num_layers": layers, "dropout": dropout},
                            {"arch": "lstm", "hidden_size": hidden, "num_layers": layers,
                             "dropout": dropout}, (3e-3,), seeds=(0,),
                            wall_seconds=_CAPACITY[budget]["seconds"]))
    # The main job's data pipeline and optimiser (`jaxrnn.config.Config` defaults), so that its
    # model (H=384, one layer, dropout 0.25) is one of the rows.
    base = _base(budget, batch_size=64, eval_batch_size=1, warmup_steps=50)
    return Study("Which LSTM (hidden size x layers x dropout) learns most in a fixed wall-time "
                 f"budget of {_CAPACITY[budget]['seconds']:g} s of training steps on this machine?",
                 base, tuple(groups), ("hidden_size", "num_layers", "dropout", "steps"),
                 plots=("curves", "curves_wall"), samples=True)


# The trained-to-best cell comparisons: the learning-rate phase's short runs (steps), then runs
# trained until no run of the group improved its validation loss for ``patience`` evaluations
# (every ``eval_every`` steps) or the cap of ``cap`` steps. ``to_best``: at B = 64 an epoch of
# Tiny Shakespeare is 312 steps, so the LR phase is ~1.9 epochs and the cap ~15.4 epochs.
_TO_BEST = {
    "quick": dict(lr_steps=40, cap=60, eval_every=20, patience=2, bracket=1, scale=1 / 8,
                  batch_size=16),
    "to_best": dict(lr_steps=600, cap=4800, eval_every=300, patience=2, bracket=2, scale=1.0),
}
_LR_GRID = (1e-3, 3e-3, 1e-2)


def _cell_comparison(budget, vocab_size, *, reference_hidden, batch_size, dropouts, models,
                     question, lr_grid=_LR_GRID, base_extra=None):
    """Groups comparing ``models`` -- ``(name, overrides)`` pairs, e.g. ``("rnn", {"arch":
    "rnn"})``, ``("lstm-L2", {"arch": "lstm", "num_layers": 2})`` -- at the parameter count of a
    one-layer LSTM of ``reference_hidden`` units (each model's hidden size sized to it).

    1. ``lr-<model>``: one seed at the middle dropout of ``dropouts``, the rates of ``lr_grid``
       for ``lr_steps`` steps, the grid extended while its best is on an edge (`Group.bracket`).
    2. With several ``dropouts``: ``<model>-dropout<p>``, seed 0 at each dropout, trained to its
       best at the bracketed rate (retried once at a third of it if it `stalled`); then
       ``<model>-seeds``, the other seeds at the dropout (and rate) that validated best. With
       one dropout: ``<model>-trained``, every seed at it.
    Groups are ordered phase by phase for the one-layer models, then the deeper models' phases,
    so that a partial study has every one-layer model's earlier phases.
    """
    size = _TO_BEST["quick" if budget == "quick" else "to_best"]
    if budget == "quick":       # a first look in under 2 minutes: one dropout, one layer
        dropouts = dropouts[:1]
        models = [(name, spec) for name, spec in models if spec.get("num_layers", 1) == 1]
    reference_hidden = max(4, int(reference_hidden * size["scale"]))
    target = param_count(_cell("lstm"), vocab_size, reference_hidden)
    lr_phase = dict(num_steps=size["lr_steps"], eval_every=size["lr_steps"] // 2,
                    warmup_steps=size["lr_steps"] // 12)
    trained = dict(num_steps=size["cap"], eval_every=size["eval_every"])
    phases = {name: ([], [], []) for name, _ in models}
    for model_name, spec in models:
        arch, layers = spec["arch"], spec.get("num_layers", 1)
        hidden = (reference_hidden if (arch, layers) == ("lstm", 1)
                  else hidden_for_params(_cell(arch), vocab_size, target, layers))
        labels = {"model": model_name, "hidden_size": hidden}
        overrides = {"num_layers": layers, **spec, "hidden_size": hidden}
        rate_source = f"lr-{model_name}"
        lr_dropout = dropouts[len(dropouts) // 2]
        phase = phases[model_name]
        phase[0].append(Group(rate_source, {"part": "lr", **labels, "dropout": lr_dropout},
                               {**overrides, **lr_phase, "dropout": lr_dropout}, lr_grid,
                               seeds=(0,), bracket=size["bracket"]))
        if len(dropouts) == 1:
            phase[1].append(Group(f"{model_name}-trained",
                                   {"part": "trained", **labels, "dropout": dropouts[0]},
                                   {**overrides, **trained, "dropout": dropouts[0]}, (),
                                   patience=size["patience"], retry_lower=1,
                                   derive=best_rate_of(rate_source)))
            continue
        sources = []
        for dropout in dropouts:
            sources.append(f"{model_name}-dropout{dropout:g}")
            phase[1].append(Group(sources[-1], {"part": "trained", **labels, "dropout": dropout},
                                   {**overrides, **trained, "dropout": dropout}, (),
                                   seeds=(0,), patience=size["patience"], retry_lower=1,
                                   derive=best_rate_of(rate_source)))
        phase[2].append(Group(f"{model_name}-seeds", {"part": "trained", **labels},
                               {**overrides, **trained}, (), seeds=(1, 2),
                               patience=size["patience"],
                               derive=best_setting_of(tuple(sources), "dropout", rate_source)))
    base = {**_COMMON, "batch_size": size.get("batch_size", batch_size),
            "log_every": size["eval_every"] // 2,
            "warmup_steps": 50 if budget != "quick" else 4, **(base_extra or {})}
    # The one-layer models phase by phase, then the deeper models' phases.
    order = [[phases[name] for name, spec in models if spec.get("num_layers", 1) == 1],
             [phases[name] for name, spec in models if spec.get("num_layers", 1) > 1]]
    groups = tuple(group for part in order for index in range(3) for model in part
                   for group in model[index])
    return Study(question, base, groups,
                 ("part", "model", "hidden_size", "dropout", "learning_rate"), best_lr=True,
                 plots=("curves",), samples=True, compare_within=("part",))


# The three cells of the assignment's central comparison (one layer each).
_CELLS = (("rnn", {"arch": "rnn"}), ("lstm", {"arch": "lstm"}), ("gru", {"arch": "gru"}))


def _cells_108k(budget, vocab_size):
    return _cell_comparison(
        budget, vocab_size, reference_hidden=128, batch_size=32, dropouts=(0.0,), models=_CELLS,
        question="Vanilla RNN, LSTM or GRU at ~108 k parameters, each at its bracketed learning "
                 "rate and trained to its best validation loss?")


def _cells_720k(budget, vocab_size):
    return _cell_comparison(
        budget, vocab_size, reference_hidden=384, batch_size=64, dropouts=(0.0, 0.25, 0.5),
        models=_CELLS + (("lstm-L2", {"arch": "lstm", "num_layers": 2}),),
        question="Vanilla RNN, LSTM, GRU and a two-layer LSTM at the main job's ~0.72 M "
                 "parameters, each at its bracketed learning rate and validated dropout, "
                 "trained to its best validation loss?")


def _irnn(budget, vocab_size):
    # Le, Jaitly & Hinton 2015's recipe: ReLU units, identity recurrent matrix, plain SGD (no
    # momentum, constant rate), beside the tanh RNN with its orthogonal initialisation under the
    # same optimiser, each at its own bracketed rate (clip 5 as in every study).
    models = (("irnn", {"arch": "rnn", "activation": "relu", "recurrent_init": "identity"}),
              ("rnn-tanh", {"arch": "rnn", "activation": "tanh",
                            "recurrent_init": "orthogonal"}))
    return _cell_comparison(
        budget, vocab_size, reference_hidden=128, batch_size=32, dropouts=(0.0,), models=models,
        lr_grid=(0.001, 0.01, 0.1),
        base_extra={"optimizer": "sgd", "momentum": 0.0, "schedule": "constant",
                    "warmup_steps": 0},
        question="Does an IRNN (ReLU, identity recurrent matrix) trained with plain SGD learn "
                 "where a tanh RNN under the same optimiser stalls (Le et al. 2015's recipe, "
                 "~108 k parameters, each at its bracketed rate, trained to its best)?")


def _schedules_depth(budget, vocab_size):
    """The LSTM of ~108 k parameters (H=128) trained to its best: the constant, cosine and
    exponential schedules after a warm-up of 100 steps and the cosine one without warm-up, each
    at its own bracketed learning rate (``lr-lstm``) and at a third of it (`Group.lower_too`),
    reported at the one that validates best; then 1-3 layers x dropout 0 / 0.25 / 0.5 (cosine,
    warm-up 100) at the rate that validated best in the long cosine runs. Each with the study's
    seeds."""
    size = _TO_BEST["quick" if budget == "quick" else "to_best"]
    hidden = max(4, int(128 * size["scale"]))
    warmups = (0, 100) if budget != "quick" else (0, 8)
    lr_phase = dict(num_steps=size["lr_steps"], eval_every=size["lr_steps"] // 2,
                    warmup_steps=size["lr_steps"] // 12)
    trained = dict(num_steps=size["cap"], eval_every=size["eval_every"])
    common = {"arch": "lstm", "hidden_size": hidden}
    groups = [Group("lr-lstm", {"part": "lr", "schedule": "cosine",
                                "warmup_steps": lr_phase["warmup_steps"], "num_layers": 1,
                                "dropout": 0.0},
                    {**common, **lr_phase, "dropout": 0.0}, _LR_GRID, seeds=(0,),
                    bracket=size["bracket"])]
    # Each schedule after the warm-up of 100 steps, and the cosine one without warm-up too.
    for schedule, warmup in (("constant", warmups[1]), ("cosine", warmups[1]),
                             ("exponential", warmups[1]), ("cosine", warmups[0])):
        groups.append(Group(f"{schedule}-warmup{warmup}",
                            {"part": "schedule", "schedule": schedule,
                             "warmup_steps": warmup, "num_layers": 1, "dropout": 0.0},
                            {**common, **trained, "schedule": schedule,
                             "warmup_steps": warmup, "dropout": 0.0}, (),
                            patience=size["patience"], retry_lower=1, lower_too=True,
                            derive=best_rate_of("lr-lstm")))
    for layers in ((1, 2) if budget == "quick" else (1, 2, 3)):
        for dropout in ((0.0, 0.5) if budget == "quick" else (0.0, 0.25, 0.5)):
            reuse = (layers, dropout) == (1, 0.0)     # the cosine group at the chosen rate
            groups.append(Group(f"depth-L{layers}-dropout{dropout:g}",
                                {"part": "depth", "schedule": "cosine",
                                 "warmup_steps": warmups[1], "num_layers": layers,
                                 "dropout": dropout},
                                {**common, **trained, "schedule": "cosine",
                                 "warmup_steps": warmups[1], "num_layers": layers,
                                 "dropout": dropout}, (), patience=size["patience"],
                                retry_lower=0 if reuse else 1,
                                derive=best_rate_of(f"cosine-warmup{warmups[1]}",
                                                    long_runs=True, reuse=reuse)))
    base = {**_COMMON, "batch_size": size.get("batch_size", 32),
            "log_every": size["eval_every"] // 2}
    return Study("At the LSTM's bracketed learning rate and trained to its best validation loss: "
                 "does the learning-rate schedule matter, and do depth and dropout (~108 k "
                 "parameters per layer of H=128)?", base, tuple(groups),
                 ("part", "schedule", "warmup_steps", "num_layers", "dropout", "learning_rate"),
                 best_lr=True, plots=("curves",), compare_within=("part",))


# The regularisation study: the main job's LSTM (H=384, B=64) at its bracketed rate, each method
# trained to its best with the study's seeds; a longer cap than the cell comparisons (19 epochs)
# so that the unregularised runs reach their over-fitting point. (rows, Config fields)
_REGULARISERS = (
    ("dropout0.25", {"dropout": 0.25}),                      # today's (Zaremba et al. 2014)
    ("none", {"dropout": 0.0}),
    ("dropout0.25-recurrent0.25", {"dropout": 0.25, "recurrent_dropout": 0.25}),
    ("dropout0.25-weight_drop0.25", {"dropout": 0.25, "weight_drop": 0.25}),
    ("dropout0.25-zoneout", {"dropout": 0.25, "zoneout_cell": 0.25, "zoneout_hidden": 0.05}),
    ("variational0.25", {"dropout": 0.0, "variational_dropout": 0.25}),
    ("dropout0.25-embedding0.1", {"dropout": 0.25, "embedding_dropout": 0.1}),
    ("dropout0.25-adamw0.01", {"dropout": 0.25, "optimizer": "adamw", "weight_decay": 0.01}),
    ("dropout0.25-adamw0.1", {"dropout": 0.25, "optimizer": "adamw", "weight_decay": 0.1}),
)
_REGULARISER_FIELDS = ("dropout", "variational_dropout", "recurrent_dropout", "weight_drop",
                       "embedding_dropout", "zoneout_hidden", "zoneout_cell", "weight_decay")


def combined_regularisers(baseline, candidates, rate_source, reuse=True, size=2):
    """A `Group.derive`: the settings of the ``size`` groups of ``candidates`` with the lowest mean
    validation loss among those that beat ``baseline``'s, merged into one (the largest rate of
    each field; AdamW when a weight decay won), at the rate of ``rate_source``; the best single
    one when none beat it. With ``reuse``, when one group is chosen the combination reports its
    runs (``same_as``); without it (the combination applied to another model) it is always
    trained. Only the ``size`` best, not every winner: the union of all of them over-regularises
    (BUILD_NOTES.md, the regularisation study)."""
    def derive(done):
        losses = {name: min(mean_val_by_rate(done[name]).values())
                  for name in (baseline, *candidates)}
        winners = sorted((name for name in candidates if losses[name] < losses[baseline]),
                         key=losses.get)[:size]
        chosen = winners or [min(candidates, key=losses.get)]
        overrides = {}
        for name in chosen:
            saved = done[name][0]["config"]
            for field in _REGULARISER_FIELDS:
                if saved["optimizer"] != "adamw" and field == "weight_decay":
                    continue
                overrides[field] = max(overrides.get(field, 0.0), saved[field])
            if saved["optimizer"] == "adamw":
                overrides["optimizer"] = "adamw"
        rate = best_rate_of(rate_source)(done)
        note = rate["note"] + "; " + (
            f"combines {', '.join(winners)} (the {len(winners)} best in validation of the "
            f"methods that beat {baseline})" if winners
            else f"no method beat {baseline} in validation: the best one, {chosen[0]}")
        return {"learning_rates": rate["learning_rates"],
                "overrides": overrides, "note": note,
                "labels": {"method": "combination: " + " + ".join(chosen)},
                # one method chosen: the combination is that group's program, not trained again
                "same_as": chosen[0] if reuse and len(chosen) == 1 else None}
    return derive


def _regularisation(budget, vocab_size):
    size = _TO_BEST["quick" if budget == "quick" else "to_best"]
    hidden = max(4, int(384 * size["scale"]))
    cap = size["cap"] * 5 // 4            # to_best: 6,000 steps of 64 x 50, 19 epochs
    lr_phase = dict(num_steps=size["lr_steps"], eval_every=size["lr_steps"] // 2,
                    warmup_steps=size["lr_steps"] // 12)
    trained = dict(num_steps=cap, eval_every=size["eval_every"])
    common = {"arch": "lstm", "hidden_size": hidden}
    rows = _REGULARISERS[:3] if budget == "quick" else _REGULARISERS
    groups = [Group("lr-lstm", {"part": "lr", "method": "dropout0.25"},
                    {**common, **lr_phase, "dropout": 0.25}, _LR_GRID, seeds=(0,),
                    bracket=size["bracket"])]
    for name, fields in rows:
        groups.append(Group(name, {"part": "trained", "method": name},
                            {**common, **trained, **fields}, (), patience=size["patience"],
                            derive=best_rate_of("lr-lstm")))
    candidates = tuple(name for name, _ in rows[1:] if name != "none")
    groups.append(Group("combination", {"part": "trained"}, {**common, **trained}, (),
                        patience=size["patience"],
                        derive=combined_regularisers(rows[0][0], candidates, "lr-lstm")))
    # The alternative size: two layers of H (2.6x the parameters; dropout now also between the
    # layers), its own bracketed rate, trained with today's dropout and with the combination.
    deep = {**common, "num_layers": 2}
    groups += [Group("lr-lstm-L2", {"part": "lr-L2", "method": "dropout0.25"},
                     {**deep, **lr_phase, "dropout": 0.25}, _LR_GRID, seeds=(0,),
                     bracket=size["bracket"]),
               Group("L2-combination", {"part": "trained-L2"}, {**deep, **trained}, (),
                     patience=size["patience"],
                     derive=combined_regularisers(rows[0][0], candidates, "lr-lstm-L2",
                                                  reuse=False)),
               Group("L2-dropout0.25", {"part": "trained-L2", "method": "dropout0.25"},
                     {**deep, **trained, "dropout": 0.25}, (), patience=size["patience"],
                     derive=best_rate_of("lr-lstm-L2"))]
    base = {**_COMMON, "batch_size": size.get("batch_size", 64),
            "log_every": size["eval_every"] // 2}
    return Study("Which regulariser closes the LSTM's over-fitting gap at the main job's scale "
                 "(H=384, and two layers of 384), trained to its best validation loss at the "
                 "bracketed rate?", base,
                 tuple(groups), ("part", "method", "learning_rate"), best_lr=True,
                 plots=("curves_nats",), compare_within=("part",),
                 curve_parts=("trained", "trained-L2"))


STUDIES = {"architectures": _architectures, "activations": _activations, "seq_len": _seq_len,
           "hyperparams": _hyperparams, "clipping": _clipping, "schedules": _schedules,
           "capacity": _capacity, "cells_108k": _cells_108k, "cells_720k": _cells_720k,
           "irnn": _irnn, "schedules_depth": _schedules_depth,
           "regularisation": _regularisation}
# The budgets each study has (the trained-to-best comparisons have no fixed-step ``full``).
STUDY_BUDGETS = {name: ("quick", "full") for name in STUDIES}
STUDY_BUDGETS.update({name: ("quick", "to_best")
                      for name in ("cells_108k", "cells_720k", "irnn", "schedules_depth",
                                   "regularisation")})


def make_study(name, budget, vocab_size):
    """The `Study` ``name`` at ``budget`` for a corpus of ``vocab_size`` symbols."""
    if name not in STUDIES:
        raise ConfigError(f"unknown study {name!r}; choose one of {', '.join(STUDIES)}")
    if budget not in STUDY_BUDGETS[name]:
        raise ConfigError(f"study {name} has no budget {budget!r}; choose one of "
                          f"{', '.join(STUDY_BUDGETS[name])}")
    return STUDIES[name](budget, vocab_size)


def group_config(study, group, output_dir, overrides=None):
    """The validated `Config` of one group: study base, group, then the caller's ``overrides``
    (e.g. ``data``, ``num_steps`` from the launcher's flags)."""
    values = {**study.base, **group.overrides, **(overrides or {}),
              "output_dir": str(pathlib.Path(output_dir) / group.name)}
    return config_lib.make_config(**values)


def fit_to_wall_time(config, seconds, num_runs=1, *, log=print):
    """``config`` with as many steps (a multiple of ``steps_per_call``) as fit ``seconds`` of
    training on this machine, at the step time `jaxrnn.loop.seconds_per_step` measures; two
    evaluations (half-way and at the end)."""
    step_seconds = loop.seconds_per_step(config, num_runs, log=log)
    chunk = config.steps_per_call
    half = max(1, int(seconds / step_seconds) // (2 * chunk)) * chunk   # whole chunks only
    steps = 2 * half
    log(f"  {step_seconds * 1e3:.1f} ms per step measured: {steps} steps fit {seconds:g} s")
    return dataclasses.replace(config, num_steps=steps, eval_every=half,
                               log_every=max(1, min(config.log_every, steps // 8)),
                               warmup_steps=min(config.warmup_steps, steps // 4))


def _fitted(group, config, seeds, overrides, log):
    """A wall-time group's config with its number of steps fitted (`fit_to_wall_time`). Every
    group is timed before any trains (so the timings are taken on an otherwise idle machine,
    one after the other), and the fitted steps are kept in ``<group>/steps.json``: a resumed
    study trains exactly what it planned."""
    if group.wall_seconds is None or "num_steps" in (overrides or {}):
        return config
    path = pathlib.Path(config.output_dir) / STEPS_FILE
    if path.exists():
        fitted = json.loads(path.read_text())
    else:
        runs = (len(seeds) if group.seeds is None else len(group.seeds)) \
            * len(group.learning_rates) * len(group.clip_norms)
        log(f"timing {group.name} for its {group.wall_seconds:g}-second budget")
        timed = fit_to_wall_time(config, group.wall_seconds, runs, log=log)
        fitted = {field: getattr(timed, field)
                  for field in ("num_steps", "eval_every", "log_every", "warmup_steps")}
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_json(path, fitted)
    return dataclasses.replace(config, **fitted)


def _write_json(path, value):
    files.write_atomically(path, (json.dumps(value, indent=1, allow_nan=False) + "\n").encode())


def run_group(study, group, config, seeds, *, log=print):
    """Train one group (all its runs as one vmapped program), save the best run's checkpoint
    (``best/checkpoint``; with ``study.samples`` every run's too, ``best/<run>/checkpoint``) and
    a sample of it, and commit ``result.json``; returns the result."""
    results, train_states = loop.sweep(config, seeds, group.learning_rates, group.clip_norms,
                                       patience=group.patience, log=log)
    vocab = data.load_corpus(config.data, config.split).vocab
    finite = [index for index, run in enumerate(results) if run["val"]["loss"] is not None]
    best = min(finite, key=lambda index: results[index]["val"]["loss"]) if finite else None
    text = None
    # The best run's state (the one it is tested from) in best/checkpoint; a study whose text is
    # judged keeps every run's too, in best/<run>/checkpoint (text metrics over each seed).
    folder = pathlib.Path(config.output_dir) / "best"
    saves = [] if best is None else [(best, folder)]
    if study.samples:
        saves += [(index, folder / results[index]["run"]) for index in finite]
    for index, where in saves:
        _save_run_state(config, vocab, results[index],
                        jax.tree.map(lambda leaf, index=index: leaf[index], train_states),
                        where / loop.CHECKPOINT_SUBDIR)
    if best is not None:
        state = jax.tree.map(lambda leaf: leaf[best], train_states)
        if study.samples:
            text = sample.sample_text(state.params, arch=config.cell, vocab=vocab,
                                      key=train_lib.stream_key(state.key,
                                                               train_lib.STREAM_SAMPLES,
                                                               int(state.step)),
                                      prime="\n", length=config.sample_length,
                                      temperature=config.sample_temperature)[0]
    reach = None
    if study.gradient_reach and best is not None:
        reach = gradient_reach(config, state.params, vocab)
    result = {"group": group.name, "labels": group.labels, "config": config.to_dict(),
              "gradient_reach": reach,
              "runs": results, "best_run": None if best is None else results[best]["run"],
              "sample": text, "note": group.note, "vocab_size": len(vocab),
              "num_params": param_count(config.cell, len(vocab), config.hidden_size,
                                        config.num_layers)}
    _write_json(pathlib.Path(config.output_dir) / RESULT_FILE, result)
    return result


def _save_run_state(config, vocab, run, state, directory):
    """Checkpoint one run of a group (its state at the step it is tested from) in
    ``directory``, with the run's own learning rate, clip threshold and seed in its config."""
    run_config = dataclasses.replace(config, learning_rate=run["learning_rate"],
                                     clip_norm=run["clip_norm"] or config.clip_norm,
                                     seed=run["seed"])
    checkpoint.save_checkpoint(
        directory, state_pytree=jax.device_get(state),
        metadata=runstate.checkpoint_metadata(run_config, vocab, state, run["val"]["loss"],
                                              extra={"run": run["run"]}))


def gradient_reach(config, params, vocab):
    """How far back the gradient of a trained model reaches (layer 0): the median norm of
    ``dL_T / da_{T-d}`` for d = 0..REACH_WINDOW-1 on windows of the validation split, the fitted
    per-step factor and the first distance below 1e-3 of the last step's (`jaxrnn.gradient_flow`)."""
    from jaxrnn import gradient_flow
    corpus = data.load_corpus(config.data, config.split)
    length = min(REACH_WINDOW, (len(corpus.val) - 1) // REACH_STREAMS)
    streams = data.make_streams(corpus.val, REACH_STREAMS, length, name="validation split")
    inputs, targets = data.get_window(streams, 0, length)
    flow = gradient_flow.gradient_flow(params, inputs, targets, arch=config.cell)
    return {"norms": [float(value) for value in flow.norms[0]],
            "factor_per_step": None if not np.isfinite(flow.factor_per_step[0])
            else float(flow.factor_per_step[0]), "reach": int(flow.reach[0]),
            "window": int(length)}


def run_study(name, budget, output_dir, *, seeds=(0, 1, 2), overrides=None, log=print,
              after_group=None, train=True, only=None):
    """Run (or resume) study ``name`` at ``budget``; returns ``(study, group results)``.
    ``overrides``: `Config` fields set in every group (e.g. ``data``, ``num_steps``); ``train``
    False only loads the groups finished so far, ``only`` trains just the groups it names
    (`run`)."""
    overrides = dict(overrides or {})
    vocab = data.load_corpus(overrides.get("data", config_lib.Config.data),
                             overrides.get("split", config_lib.Config.split)).vocab
    study = make_study(name, budget, len(vocab))
    return study, run(study, output_dir, seeds=seeds, overrides=overrides, log=log,
                      after_group=after_group, train=train, only=only)


def run(study, output_dir, *, seeds=(0, 1, 2), overrides=None, log=print, after_group=None,
        train=True, only=None):
    """Train every group of ``study`` that has no ``result.json`` yet; returns the list of group
    results (loaded for the groups finished earlier), each group followed by its learning-rate
    extensions (`bracket_learning_rate`). ``after_group(study, results)`` is called after each
    group trained (e.g. to redraw the report as results arrive). ``output_dir`` is locked for
    the call (`jaxrnn.files.folder_lock`; a caller that writes more into it after, as
    ``experiments.study`` does, holds the lock around both). With ``train`` False nothing is
    trained: the groups finished so far are loaded (a report of a study still running
    elsewhere, or stopped half-way), the others skipped. ``only`` (group names): train just
    those groups (with their learning-rate extensions), in the study's order; the others are
    loaded when finished, else skipped, and a named group that needs a skipped one's results is
    an error."""
    names = [group.name for group in study.groups]
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        raise ConfigError(f"--groups names no group {', '.join(unknown)} of this study; choose "
                          f"among {', '.join(names)}")
    with files.folder_lock(output_dir, "--output_dir"):
        return _run(study, pathlib.Path(output_dir), seeds, overrides, log, after_group, train,
                    only)


def _run(study, output_dir, seeds, overrides, log, after_group, train, only=None):
    output_dir.mkdir(parents=True, exist_ok=True)
    # Wall-time groups are timed before any group trains (`_fitted`); derived groups are
    # resolved when they are reached.
    configs = {group.name: _fitted(group, group_config(study, group, output_dir, overrides),
                                   seeds, overrides, log)
               for group in study.groups if group.derive is None}
    results, done = [], {}
    for index, group in enumerate(study.groups):
        where = f"[{index + 1}/{len(study.groups)}] {group.name}"
        finished = (output_dir / group.name / RESULT_FILE).exists()
        if not finished and not (train and (only is None or group.name in only)):
            log(f"{where}: not trained yet, left out")
            continue
        if group.derive is not None:
            try:
                group = _derived(group, _Done(done))
            except _NotTrainedYet as missing:
                raise ConfigError(f"group {group.name} needs the results of group "
                                  f"{missing.args[0]}, which is not trained yet; add it to "
                                  f"--groups") from None
            config = group_config(study, group, output_dir, overrides)
        else:
            config = configs[group.name]
        group_results = [_train_or_load(study, group, config, seeds, done, where, log)]
        if group.bracket:
            group_results += bracket_learning_rate(study, group, group_results[0], output_dir,
                                                   seeds, overrides, log, train)
        if group.retry_lower:
            group_results += retry_at_lower_rates(study, group, group_results[0], output_dir,
                                                  seeds, overrides, log, train)
        done[group.name] = group_results
        results.extend(group_results)
        if after_group is not None:
            after_group(study, results)
    return results


class _NotTrainedYet(Exception):
    """A derived group asked for the results of a group that was left out (``--groups``)."""


class _Done(dict):
    """The finished groups' results by name, as ``derive`` functions read them: a name with no
    results raises `_NotTrainedYet`, so that a ``KeyError`` from a bug inside a ``derive`` is
    not mistaken for a group left out."""
    def __missing__(self, name):
        raise _NotTrainedYet(name)


def _derived(group, done):
    """``group`` with the fields its ``derive`` resolves from the earlier results ``done``;
    ``overrides`` and ``labels`` are merged into the group's own."""
    fields = group.derive(done)
    for name in ("overrides", "labels"):
        if name in fields:
            fields[name] = {**getattr(group, name), **fields[name]}
    return group._replace(derive=None, **fields)


def _train_or_load(study, group, config, seeds, done, where, log):
    """A group's result: loaded when its ``result.json`` exists, reported from its ``same_as``
    group, or trained (`run_group`)."""
    path = pathlib.Path(config.output_dir) / RESULT_FILE
    if path.exists():
        log(f"{where}: done earlier, loaded {path}")
        return json.loads(path.read_text())
    if group.same_as is not None:
        source = next(result for results in done.values() for result in results
                      if result["group"] == group.same_as)
        result = {**source, "group": group.name, "labels": group.labels,
                  "runs_dir": source.get("runs_dir", group.same_as)}
        _write_json(path, result)
        log(f"{where}: the same program as {group.same_as}, whose runs it reports")
        return result
    log(where)
    return run_group(study, group, config, list(seeds) if group.seeds is None
                     else list(group.seeds), log=log)


# ---------------------------------------------------------------------------------------------
# Learning rates: bracketed by the runner, handed to later groups
# ---------------------------------------------------------------------------------------------
def mean_val_by_rate(group_results):
    """``{learning rate: mean validation loss over its seeds}`` over the runs of one or more
    group results; a diverged run or one without a finite validation loss counts as inf."""
    losses = {}
    for result in group_results:
        for run in result["runs"]:
            loss = run["val"]["loss"]
            bad = run["diverged"] or loss is None or not math.isfinite(loss)
            losses.setdefault(run["learning_rate"], []).append(INF if bad else loss)
    return {rate: float(np.mean(values)) for rate, values in losses.items()}


def bracket_status(rates_tried, best):
    """"bracketed" when a lower and a higher rate than ``best`` were tried (and, being
    ``best``, it beat them), else which edge of the grid it sits on."""
    if len(rates_tried) < 2:
        return "one rate tried"
    if min(rates_tried) < best < max(rates_tried):
        return "bracketed"
    return "top edge" if best == max(rates_tried) else "bottom edge"


def lowest_loss_rate(rate_losses):
    """The rate of ``{rate: loss}`` with the lowest loss, the lowest rate among ties."""
    return min(rate_losses, key=lambda rate: (rate_losses[rate], rate))


def next_rate(rate_losses, factor=LR_FACTOR):
    """The learning rate that extends a grid whose best is on its edge (LR_FACTOR beyond it);
    None when the best is interior. Ties (every rate diverged: all inf) go to the lowest rate,
    so a grid that diverges everywhere is extended downwards."""
    best = lowest_loss_rate(rate_losses)
    status = bracket_status(list(rate_losses), best)
    if status == "top edge":
        return max(rate_losses) * factor
    if status == "bottom edge":
        return min(rate_losses) / factor
    return None


def bracket_learning_rate(study, group, result, output_dir, seeds, overrides, log, train=True):
    """Extend ``group``'s learning-rate grid while its best rate is on the grid's edge, up to
    ``group.bracket`` times: each extension is a one-rate group ``<name>-lr<rate>`` with the
    same seeds and settings (its own ``result.json``, so an interrupted study resumes it).
    Returns the extensions' results; with ``train`` False, the extensions only if every one the
    grid needs is finished (else none)."""
    if len(group.learning_rates) < 2:
        raise ConfigError(f"group {group.name} brackets its learning rate but its grid has "
                          f"{len(group.learning_rates)} rate; give it at least two")
    extensions = []
    for _ in range(group.bracket):
        rate = next_rate(mean_val_by_rate([result] + extensions))
        if rate is None:
            break
        extension = group._replace(name=f"{group.name}-lr{rate:.3g}", learning_rates=(rate,),
                                   bracket=0, derive=None, same_as=None)
        config = group_config(study, extension, output_dir, overrides)
        if not train and not (pathlib.Path(config.output_dir) / RESULT_FILE).exists():
            return []
        log(f"  {group.name}: best learning rate on the grid's edge, extending to {rate:.3g}")
        extensions.append({**_train_or_load(study, extension, config, seeds, {},
                                            f"  {extension.name}", log),
                           "bracket_of": group.name})
    return extensions


def stalled(result):
    """Whether a run of a trained-to-best group had its best validation loss in the first eighth
    of its cap (at least its first evaluation): from there it got worse or stopped improving --
    the loss blew up, spiked or plateaued -- so the rate is too high for a run this long (a rate
    bracketed on short runs, which stop about there, can be). One such run is enough: the retry
    at a lower rate is then compared with it on mean validation loss over the seeds."""
    return _peaked_early(result)[0] > 0


def _peaked_early(result):
    """``(how many runs of ``result`` had their best validation loss by step ``early``, early)``,
    ``early`` the first eighth of the cap (at least the first evaluation)."""
    config = result["config"]
    early = max(config["eval_every"], config["num_steps"] // 8)
    return sum(run.get("best_step") is not None and run["best_step"] <= early
               for run in result["runs"]), early


def retry_at_lower_rates(study, group, result, output_dir, seeds, overrides, log, train=True):
    """While the latest of ``group``'s results `stalled` (with ``group.lower_too``, the first
    time regardless), train it again at 1 / LR_FACTOR of its rate, up to ``group.retry_lower``
    times, as one-rate groups ``<name>-lr<rate>`` (each with its
    own ``result.json``). With ``train`` False only finished retries are loaded. Returns the
    retries' results."""
    retries = []
    for _ in range(group.retry_lower):
        last = (retries or [result])[-1]
        if not stalled(last) and not (group.lower_too and not retries):
            break
        stalled_rate = last["runs"][0]["learning_rate"]
        rate = stalled_rate / LR_FACTOR
        count, early = _peaked_early(last)
        why = (f"{stalled_rate:.3g} stalled in the long run ({count} of {len(last['runs'])} "
               f"runs best by step {early}), retried at {rate:.3g}" if count else
               f"also trained at {rate:.3g}, a third of {stalled_rate:.3g}")
        retry = group._replace(
            name=f"{group.name}-lr{rate:.3g}", learning_rates=(rate,), bracket=0, retry_lower=0,
            lower_too=False, derive=None, same_as=None,
            note=f"{group.note + '; ' if group.note else ''}{why}")
        config = group_config(study, retry, output_dir, overrides)
        if not train and not (pathlib.Path(config.output_dir) / RESULT_FILE).exists():
            break
        log(f"  {group.name}: {why}")
        retries.append({**_train_or_load(study, retry, config, seeds, {}, f"  {retry.name}",
                                         log), "retry_of": group.name})
    return retries


def best_rate_of(source, long_runs=False, reuse=False):
    """A `Group.derive` giving the group the best learning rate of the earlier group
    ``source`` and its extensions or retries, with the bracket's status in the group's note;
    ``long_runs``: ``source`` is a trained-to-best group, and the note says its long runs (and
    any retry at a lower rate) chose the rate instead; ``reuse``: the group is the same program
    as ``source`` and reports the runs of whichever of its results has that rate (``same_as``)."""
    def derive(done):
        losses = mean_val_by_rate(done[source])
        rate = lowest_loss_rate(losses)
        rates = ", ".join(f"{value:.3g}" for value in sorted(losses))
        if long_runs:
            fields = {"learning_rates": (rate,),
                      "note": f"lr that validated best in {source}'s long runs ({rates})"}
            if reuse:
                fields["same_as"] = next(result["group"] for result in done[source]
                                         if result["runs"][0]["learning_rate"] == rate)
            return fields
        return {"learning_rates": (rate,),
                "note": f"lr from {source} ({bracket_status(list(losses), rate)}: {rates})"}
    return derive


def best_setting_of(sources, field, rate_source):
    """A `Group.derive`: the value of the `Config` ``field`` (also a label) and the learning rate
    of whichever result of the earlier groups ``sources`` (their retries at lower rates included)
    has the lowest mean validation loss; the note says where the rate came from
    (``rate_source``, or the retry)."""
    def derive(done):
        candidates = [(loss, name, result) for name in sources for result in done[name]
                      for loss in mean_val_by_rate([result]).values()]
        _, winner, result = min(candidates, key=lambda item: item[0])
        value, rate = result["config"][field], result["runs"][0]["learning_rate"]
        note = best_rate_of(rate_source)(done)["note"]
        if result.get("retry_of"):
            note = result["note"]
        note += f"; {field} {value:g} validated best of " + ", ".join(
            f"{done[name][0]['config'][field]:g}" for name in sources)
        return {"learning_rates": (rate,), "note": note, "overrides": {field: value},
                "labels": {field: value}}
    return derive
