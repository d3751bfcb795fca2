"""Every path argument of every subcommand: a missing folder, an unwritable place, a folder where
a file is expected (or a file where a folder is) is one line ``error: ...``, exit 2, before any
work, and leaves nothing behind.

The path arguments are listed from the argparse parser itself, so a new one that is not in
:data:`MATRIX` fails :func:`test_the_matrix_lists_every_path_argument`.

"Unwritable" is made without chmod (the tests may run as root, and chmod does not stop root): a
path under a regular file (``file.txt/sub.png``) and a place in /proc, where even root cannot
create files.
"""

from __future__ import annotations

import argparse
import errno
import re
from pathlib import Path

import pytest

from hooklab.cli import main as cli
from hooklab.cli.common import PathArg
from hooklab.models import zoo as models
from hooklab.studies import train

#: (subcommand path, option) -> (kind, argv of the subcommand without the path argument).
#: ``()`` is the top-level parser; its ``--store`` goes before a command.
MATRIX: dict[tuple[tuple[str, ...], str], tuple[str, list[str]]] = {
    ((), "--store"): ("store", ["runs", "list"]),
    (("record",), "--store"): ("store", ["record", "--model", "simple_model"]),
    (("record",), "--weights"): ("weights", ["record", "--model", "simple_model"]),
    (("cam",), "--store"): ("store", ["cam", "--weights", "random"]),
    (("cam",), "--weights"): ("weights", ["cam"]),
    (("cam",), "--image"): ("input_file", ["cam", "--weights", "random"]),
    (("cam",), "--out"): ("output_file", ["cam", "--weights", "random"]),
    (("cam",), "--npy"): ("output_file", ["cam", "--weights", "random"]),
    (("train",), "--store"): ("store", ["train", "--steps", "1"]),
    (("train",), "--save-weights"): ("output_file", ["train", "--steps", "1", "--no-save"]),
    (("train",), "--out"): ("store", ["train", "--steps", "1", "--no-save"]),
    (("train",), "--cifar10-root"): ("input_dir", ["train", "--steps", "1", "--no-save"]),
    (("runs",), "--store"): ("store", ["runs"]),
    (("runs", "list"), "--store"): ("store", ["runs", "list"]),
    (("runs", "show"), "--store"): ("store", ["runs", "show", "20260101-000000-00000000"]),
    (("runs", "query"), "--store"): ("store", ["runs", "query"]),
    (("runs", "update"), "--store"): ("store", ["runs", "update", "20260101-000000-00000000",
                                                "--notes", "x"]),
    (("runs", "export"), "--store"): ("store", ["runs", "export", "20260101-000000-00000000"]),
    (("runs", "export"), "-o"): ("output_file_or_dir",
                                 ["runs", "export", "20260101-000000-00000000"]),
    (("runs", "import"), "--store"): ("store", ["runs", "import", "file.txt"]),
    (("runs", "import"), "file"): ("input_file", ["runs", "import"]),
    (("runs", "delete"), "--store"): ("store", ["runs", "delete", "20260101-000000-00000000"]),
    (("runs", "restore"), "--store"): ("store", ["runs", "restore",
                                                 "20260101-000000-00000000"]),
    (("runs", "trash"), "--store"): ("store", ["runs", "trash"]),
    (("runs", "purge"), "--store"): ("store", ["runs", "purge", "--yes"]),
    (("runs", "history"), "--store"): ("store", ["runs", "history", "r1"]),
    (("runs", "audit"), "--store"): ("store", ["runs", "audit"]),
    (("hooks",), "--store"): ("store", ["hooks"]),
    (("hooks",), "--weights"): ("weights", ["hooks"]),
    (("hooks",), "--dot"): ("output_file", ["hooks"]),
    (("evaluate",), "--store"): ("store", ["evaluate", "-n", "2"]),
    (("evaluate",), "--weights"): ("weights", ["evaluate", "-n", "2"]),
    (("evaluate",), "--csv"): ("output_file", ["evaluate", "-n", "2"]),
    (("sweep",), "--store"): ("store", ["sweep"]),
    (("sweep", "run"), "--store"): ("store", ["sweep", "run", "--in-process", "--steps", "1"]),
    (("sweep", "list"), "--store"): ("store", ["sweep", "list"]),
    (("sweep", "show"), "--store"): ("store", ["sweep", "show", "sweep-x"]),
}

#: What each kind must refuse. Paths are relative to a scratch folder holding ``file.txt`` (a
#: file) and ``adir/`` (a folder); "/proc/..." is absolute.
BAD: dict[str, dict[str, str]] = {
    "output_file": {"missing folder": "nodir/x.bin", "under a file": "file.txt/x.bin",
                    "a folder": "adir", "unwritable (/proc)": "/proc/hooklab-x.bin"},
    "output_file_or_dir": {"missing folder": "nodir/x.zip", "under a file": "file.txt/x.zip",
                           "unwritable folder (/proc)": "/proc",
                           "unwritable (/proc)": "/proc/hooklab-x.zip"},
    "input_file": {"missing folder": "nodir/x.png", "missing file": "none.png",
                   "a folder": "adir", "under a file": "file.txt/x.png"},
    "input_dir": {"missing folder": "nodir", "a file": "file.txt", "under a file": "file.txt/d"},
    "weights": {"missing folder": "nodir/w.pt", "missing file": "none.safetensors",
                "a folder": "adir", "under a file": "file.txt/w.pt"},
    "store": {"a file": "file.txt", "under a file": "file.txt/sub",
              "unwritable (/proc)": "/proc/hooklab-store"},
}

#: Words that make an option look like a path (for options that forgot to use PathArg).
PATHY = re.compile(r"path|file|dir|folder|root|\bout|save|export|store|weights|image|npy|zip|png",
                   re.IGNORECASE)


def path_arguments(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """(subcommand path, option) of every path-like argument, walking the subparsers."""
    found: dict[tuple[tuple[str, ...], str], str | None] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(path_arguments(sub, prefix + (name,)))
            continue
        if action.nargs == 0:  # flags (--no-save, --help) take no value
            continue
        name = action.option_strings[0] if action.option_strings else action.dest
        words = f"{action.dest} {action.metavar or ''} {' '.join(action.option_strings)}"
        if isinstance(action, PathArg) or PATHY.search(words):
            found[(prefix, name)] = getattr(action, "kind", None)
    return found


def test_the_matrix_lists_every_path_argument():
    found = path_arguments(cli.build_parser())
    assert set(found) == set(MATRIX), "path arguments changed: update MATRIX"
    for key, kind in found.items():
        assert kind == MATRIX[key][0], f"{key} is checked as {kind}, expected {MATRIX[key][0]}"


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """A scratch folder as the working directory (file.txt, adir/), the store inside it, and a
    guard: no model may be built and no training may start."""
    (tmp_path / "file.txt").write_text("a file")
    (tmp_path / "adir").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOOKLAB_STORE", str(tmp_path / "runs"))
    work: list[str] = []
    monkeypatch.setattr(models, "get_model", lambda *a, **k: work.append("get_model"))
    monkeypatch.setattr(train, "train_run", lambda *a, **k: work.append("train_run"))
    return tmp_path, work


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


CASES = [(key, mode) for key, (kind, _) in MATRIX.items() for mode in BAD[kind]]


@pytest.mark.parametrize("key,mode", CASES, ids=[f"{' '.join(k[0]) or 'main'} {k[1]}: {m}"
                                                  for k, m in CASES])
def test_bad_path_is_one_line_exit_2_before_any_work(scratch, capsys, key, mode):
    root, work = scratch
    (prefix, option), (kind, argv) = key, MATRIX[key]
    bad = BAD[kind][mode]
    before = _listing(root)
    if not prefix:
        argv = [option, bad, *argv]
    elif option.startswith("-"):
        argv = [*argv, option, bad]
    else:  # a positional argument
        argv = [*argv, bad]
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (argv, out, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert bad in err, err  # the message names the path the user gave
    assert work == [], "work started before the path was checked"
    assert _listing(root) == before  # nothing created (no store, no probe file, no output)


def test_store_from_the_environment_is_checked_too(scratch, capsys, monkeypatch):
    root, _ = scratch
    monkeypatch.setenv("HOOKLAB_STORE", str(root / "file.txt"))
    assert cli.main(["runs", "list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: $HOOKLAB_STORE") and "not a folder" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("argv", [["record", "--model", "simple_model"],
                                  ["train", "--steps", "1"],
                                  ["runs", "delete", "20260101-000000-00000000"]])
def test_a_read_only_store_is_refused_before_writing_commands(scratch, capsys, argv):
    """/proc/self is an existing folder nobody can create files in (root neither)."""
    _, work = scratch
    assert cli.main(["--store", "/proc/self", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: store ") and "read-only" in err and err.count("\n") == 1
    assert work == []


def test_cam_checks_the_files_it_will_really_write(scratch, capsys):
    """Several methods write name-METHOD.png; --npy without .npy writes name.npy: those names
    are checked, before the CAM is computed."""
    root, work = scratch
    (root / "o-hirescam.png").mkdir()
    (root / "maps.npy").mkdir()
    assert cli.main(["cam", "--weights", "random", "--method", "gradcam", "hirescam",
                     "--out", "o.png"]) == 2
    assert cli.main(["cam", "--weights", "random", "--npy", "maps"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["error: --out o-hirescam.png: is a folder; give a file name",
                   "error: --npy maps.npy: is a folder; give a file name"]
    assert work == []


def test_an_os_error_no_check_foresaw_is_one_line(tmp_path, capsys, monkeypatch):
    """The disk fills up while the maps are written: one line naming the file, exit 2."""
    import numpy as np

    def full_disk(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(np, "save", full_disk)
    npy = tmp_path / "m.npy"
    assert cli.main(["cam", "--weights", "random", "--npy", str(npy)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {npy}: No space left on device\n"
