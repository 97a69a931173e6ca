"""README.md runs as written: every Python block executes, the errors tables quote the code, and
the flag tables list exactly the flags each launcher defines."""
import contextlib
import dataclasses
import glob
import io
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Words of the errors tables that stand for what a message fills in.
PLACEHOLDERS = r"\.\.\.|\b(?:N|NN|K|NAME|VALUE|PATH|SPEC)\b"


def _readme():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        return handle.read()


def _python_blocks():
    return re.findall(r"^```python\n(.*?)^```", _readme(), flags=re.S | re.M)


def test_readme_has_python_blocks():
    assert _python_blocks()


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_python_block_runs(index):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(_python_blocks()[index], f"README.md python block {index}", "exec"), {})
    losses = [float(value) for value in re.findall(r"loss (\d+\.\d+)", printed.getvalue())]
    assert losses and losses[-1] < losses[0], printed.getvalue()        # it trains


def _source_text():
    """The text of every library and launcher module, adjacent string literals joined."""
    text = ""
    for path in sorted(glob.glob(os.path.join(ROOT, "jaxrnn", "*.py"))
                       + glob.glob(os.path.join(ROOT, "experiments", "*.py"))):
        with open(path, encoding="utf-8") as handle:
            text += handle.read()
    return re.sub(r"[\"']\s*\n\s*[rbf]*[\"']", "", text)


def _error_fragments():
    """The backticked messages of the first column of README's errors tables."""
    section = _readme().split("## Errors\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [fragment for row in rows for fragment in re.findall(r"`([^`]+)`",
                                                                row.split(" | ")[0])]


def test_errors_tables_quote_what_the_code_prints():
    fragments = _error_fragments()
    assert len(fragments) > 40
    source = _source_text()
    missing = []
    for fragment in fragments:
        pieces = [piece.strip(" ;,.:") for piece in re.split(PLACEHOLDERS, fragment)]
        pieces = [piece for piece in pieces if len(piece) >= 3]
        if fragment.startswith("unknown arch/"):
            pieces = ["unknown "]           # one row for several choices
        missing += [f"{fragment!r}: {piece!r}" for piece in pieces if piece not in source]
    assert not missing, missing


# ---------------------------------------------------------------------------------------------
# Flag tables
# ---------------------------------------------------------------------------------------------
DEFINE = re.compile(r"flags\.DEFINE_\w+\(\s*\"(\w+)\"")
TRAIN_ONLY = "(`experiments.train` only)"


def _flag_tables():
    """README's flag tables: {launcher: {flag name: the row's cells}}.

    A flag table is one whose header row starts with ``| flag``; its launcher is the one its
    header names (``| flag of `experiments.X` |``), else the one of the heading above it
    (``## Flags of `experiments.train` `` or ``### `experiments.X` ``). A first cell may list
    several backticked flags, comma-separated.
    """
    tables, heading, lines = {}, None, _readme().splitlines()
    for number, line in enumerate(lines):
        if line.startswith("#"):
            named = re.fullmatch(r"(?:## Flags of|###) `experiments\.(\w+)`", line.strip())
            heading = named.group(1) if named else None
        if not line.startswith("| flag"):
            continue
        named = re.match(r"\| flag of `experiments\.(\w+)`", line)
        launcher = named.group(1) if named else heading
        assert launcher, f"README.md line {number + 1}: a flag table that names no launcher"
        assert launcher not in tables, f"README.md line {number + 1}: a second table of {launcher}"
        rows = tables[launcher] = {}
        for row in lines[number + 2:]:
            if not row.startswith("|"):
                break
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", row.strip()[1:-1])]
            names = re.findall(r"`--(\w+)`", cells[0])
            assert names, f"README.md: a row of the {launcher} table names no flag: {row}"
            for name in names:
                assert name not in rows, f"README.md: {launcher} lists --{name} twice"
                rows[name] = cells
    return tables


def _source(*parts):
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as handle:
        return handle.read()


def _launcher_flags():
    """{launcher: its flag names}, read from the source of every ``experiments`` module run as a
    program (not imported: the launchers' absl flags would clash in one process)."""
    from jaxrnn import config as config_lib
    config_flags = set(DEFINE.findall(_source("experiments", "common.py"))) | {
        field.name for field in dataclasses.fields(config_lib.Config)}
    launchers = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "experiments", "*.py"))):
        source = _source(path)
        if not re.search(r'^if __name__ == "__main__":', source, flags=re.M):
            continue
        names = set(DEFINE.findall(source))
        if "common.define_config_flags()" in source:
            names |= config_flags
        launchers[os.path.basename(path)[:-3]] = names
    return launchers


def test_flag_tables_match_the_flags():
    """Every launcher has a flag table in README.md listing exactly the flags it defines; the
    launchers that take the training flags (sweep, compare_backward) list their own and take the
    rows of the train table not marked "`experiments.train` only"."""
    tables, launchers = _flag_tables(), _launcher_flags()
    assert {"train", "sample", "evaluate", "gradcheck", "gradient_flow", "study", "sweep",
            "plot_runs", "text_quality", "compare_backward"} <= set(launchers)
    assert set(tables) == set(launchers), \
        f"launchers without a README flag table: {sorted(set(launchers) - set(tables))}; " \
        f"tables of no launcher: {sorted(set(tables) - set(launchers))}"
    shared = {name for name, cells in tables["train"].items() if TRAIN_ONLY not in cells[-1]}
    wrong = []
    for launcher, defined in sorted(launchers.items()):
        listed = set(tables[launcher])
        if launcher != "train" and "common.define_config_flags()" in _source(
                "experiments", f"{launcher}.py"):
            listed |= shared
        if listed - defined:
            wrong.append(f"experiments.{launcher}: README lists flags it does not define: "
                         f"{', '.join(sorted(listed - defined))}")
        if defined - listed:
            wrong.append(f"experiments.{launcher}: README misses flags it defines: "
                         f"{', '.join(sorted(defined - listed))}")
    assert not wrong, "\n".join(wrong)


def _readme_value(text, like):
    """A cell of README's train table (e.g. `0.9,0.05,0.05` in backticks) as a value of the type
    of ``like``."""
    text = text.strip().strip("`")
    if isinstance(like, bool):
        return {"True": True, "False": False}.get(text, text)
    if isinstance(like, tuple):
        return tuple(float(part) for part in text.split(","))
    return type(like)(text)


def test_train_table_defaults_are_the_config_defaults():
    """The train table's default column is the 'default' preset (what a launcher runs without
    --preset), its quick column `PRESETS["quick"]`."""
    from jaxrnn import config as config_lib
    rows, defaults, wrong = _flag_tables()["train"], config_lib.make_config("default"), []
    quick = config_lib.PRESETS["quick"]
    for field in dataclasses.fields(config_lib.Config):
        if field.name not in rows:
            wrong.append(f"--{field.name}: no row")
            continue
        default = getattr(defaults, field.name)
        _, default_cell, quick_cell, _ = rows[field.name]
        if _readme_value(default_cell, default) != default:
            wrong.append(f"--{field.name}: README default {default_cell}, the default preset "
                         f"{default!r}")
        readme_quick = _readme_value(quick_cell, default) if quick_cell else None
        if readme_quick != quick.get(field.name):
            wrong.append(f"--{field.name}: README quick preset {quick_cell or 'empty'}, "
                         f"PRESETS['quick'] {quick.get(field.name, 'unset')!r}")
    assert rows["preset"][1] == "`default`"
    assert not wrong, "\n".join(wrong)
