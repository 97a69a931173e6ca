"""README.md runs as written: every Python block executes, and the errors tables quote the code."""
import contextlib
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
