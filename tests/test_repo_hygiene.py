"""The repository names no path of one particular machine: tests, scripts and records find the
corpus through JAXRNN_DATA_DIR or paths relative to the checkout."""
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Absolute paths that exist only on some machine: home folders and this project's work folder.
# (/tmp in an example such as --output_dir=/tmp/run is a choice any user can make, not one.)
MACHINE_PATH = re.compile(r"(?<![\w.~])/(work|root|home|Users)/[\w.-]")


def _tracked_files():
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                                check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [name for name in listed.decode().split("\0") if name]


def machine_paths(text):
    """The machine-specific absolute paths in ``text`` (under a work or home folder)."""
    return [match.group(0) for match in MACHINE_PATH.finditer(text)]


def _absolute(*parts):
    """"/" + "/".join(parts): the examples below are built, so that this file names no path."""
    return "/" + "/".join(parts)


def test_the_pattern_finds_machine_paths_and_nothing_else():
    work, root, home = _absolute("work", "shared"), _absolute("root", ".cache"), _absolute("home")
    assert machine_paths(f'open("{work}/data/x.txt")') == [work[:7]]
    assert machine_paths(f"cd {root}; ls {home}/me") == [root[:7], home + "/m"]
    assert not machine_paths("https://example.org/work/x, ~/work/x, ./work/x, /usr/bin, /tmp/x")


def test_no_tracked_file_names_a_machine_path():
    offenders = []
    for name in _tracked_files():
        path = os.path.join(ROOT, name)
        if not os.path.isfile(path) or os.path.getsize(path) > 2_000_000:
            continue
        with open(path, "rb") as f:
            data = f.read()
        if b"\0" in data:                                          # images and other binaries
            continue
        text = data.decode("utf-8", errors="replace")
        offenders += [f"{name}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
                      for m in MACHINE_PATH.finditer(text)]
    assert not offenders, "absolute machine paths (use JAXRNN_DATA_DIR or a relative path):\n" \
        + "\n".join(offenders[:40])
