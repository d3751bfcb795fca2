"""hooklab is an installed package: importable from anywhere, with a console script and metadata."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

import hooklab

ROOT = Path(__file__).resolve().parents[1]


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONSAFEPATH"] = "1"  # never put the working directory on sys.path
    return env


def test_import_from_another_directory(tmp_path: Path) -> None:
    code = "import hooklab, sys; print(hooklab.__version__); print(hooklab.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_clean_env(),
                         capture_output=True, text=True, check=True).stdout.split("\n")
    version, path = out[0], out[1]
    assert version == metadata.version("hooklab")
    assert Path(path).resolve().parent == (ROOT / "hooklab").resolve()


def test_version_comes_from_the_package_metadata() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert hooklab.__version__ == metadata.version("hooklab") == declared


def test_console_script_is_the_cli(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("hooklab")
    assert script.is_file(), "the `hooklab` console script is not installed in this environment"
    via_script = subprocess.run([str(script), "--help"], cwd=tmp_path, env=_clean_env(),
                                capture_output=True, text=True)
    via_module = subprocess.run([sys.executable, "-m", "hooklab", "--help"], cwd=tmp_path,
                                env=_clean_env(), capture_output=True, text=True)
    assert via_script.returncode == 0 == via_module.returncode
    assert via_script.stdout == via_module.stdout
    assert via_script.stdout.startswith("usage: hooklab ")
    for command in ("record", "cam", "train", "runs"):
        assert command in via_script.stdout


def test_entry_point_is_declared() -> None:
    eps = metadata.entry_points(group="console_scripts", name="hooklab")
    assert [ep.value for ep in eps] == ["hooklab.cli.main:main"]


@pytest.mark.slow
def test_wheel_holds_every_subpackage_and_the_shipped_defaults(tmp_path: Path) -> None:
    """A real (non-editable) wheel: every subpackage and every data file under hooklab/."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("hooklab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    tracked = subprocess.run(["git", "ls-files", "hooklab"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    expected = {n for n in tracked if n.endswith((".py", ".json", ".safetensors", ".toml", ".c"))}
    assert expected, "git lists no files under hooklab/"
    missing = sorted(expected - names)
    assert not missing, f"the wheel lacks {missing}"
