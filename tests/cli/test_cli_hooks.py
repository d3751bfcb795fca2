"""`hooklab hooks`: the inventory of a model (none on a fresh one), the seed's GradCAM run twice
shows four leaked hooks on conv3, --json rows, --dot writes the backward graph, bad input is one
line and exit code 2."""

from __future__ import annotations

import json
import re

from hooklab.cli import main as cli


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_fresh_model_has_no_hooks(capsys):
    code, out, err = run(capsys, "hooks", "--model", "simple_model")
    assert code == 0 and out.strip() == "no hooks on simple_model" and not err


def test_seed_gradcam_twice_shows_four_leaked_hooks_on_conv3(capsys):
    code, out, _ = run(capsys, "hooks", "--model", "simple_cnn", "--run-seed-gradcam-twice")
    assert code == 0
    rows = [ln for ln in out.splitlines() if ln.strip().startswith("conv3")]
    assert len(rows) == 4
    assert sorted(ln.split()[2] for ln in rows) == ["backward", "backward", "forward", "forward"]
    assert all(ln.rstrip().endswith("True") for ln in rows)
    assert "4 hook(s)" in out and "4 look leaked" in out


def test_json_rows(capsys):
    code, out, _ = run(capsys, "hooks", "--model", "simple_cnn", "--run-seed-gradcam-twice",
                       "--json")
    rows = [json.loads(ln) for ln in out.splitlines()]
    assert code == 0 and len(rows) == 4
    assert {r["module"] for r in rows} == {"conv3"} and all(r["looks_leaked"] for r in rows)
    assert all(re.search(r"hook_doctor\.py:\d+$", r["where"]) for r in rows)


def test_dot_file(capsys, tmp_path):
    dot = tmp_path / "g.dot"
    code, out, _ = run(capsys, "hooks", "--model", "simple_cnn", "--dot", str(dot), "--layers",
                       "conv1", "conv2", "conv3", "--edit", "conv2=scale(0.5)")
    text = dot.read_text(encoding="utf-8")
    assert code == 0 and text.startswith("digraph backward {")
    assert text.count("shape=note") == 3 and "edit: scale(0.5)" in text
    assert "3 hooks" in out


def test_bad_input_is_one_line(capsys, tmp_path):
    code, out, err = run(capsys, "hooks", "--model", "no_such_model")
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1
    code, out, err = run(capsys, "hooks", "--model", "simple_cnn", "--edit", "conv2=zap",
                         "--dot", str(tmp_path / "g.dot"))
    assert code == 2 and "unknown edit" in err and not out
    assert not (tmp_path / "g.dot").exists()
    code, out, err = run(capsys, "hooks", "--model", "simple_cnn", "--run-seed-gradcam-twice",
                         "--layer", "conv9")
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1
