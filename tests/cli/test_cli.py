"""The CLI, called in-process through ``hooklab.cli.main.main`` (plus one real ``python -m hooklab``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from hooklab.cli import main as cli
from hooklab.models import zoo as models
from hooklab.store.runs import TraceStore
from tests.conftest import hook_counts


@pytest.fixture
def store_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "runs"
    monkeypatch.setenv("HOOKLAB_STORE", str(d))
    return d


@pytest.fixture(autouse=True)
def no_hook_left(monkeypatch):
    """Every model the CLI builds must end with exactly the hooks it was built with."""
    built: list[tuple[torch.nn.Module, dict]] = []
    real = models.get_model

    def tracking(*args, **kwargs):
        model = real(*args, **kwargs)
        built.append((model, hook_counts(model)))
        return model

    monkeypatch.setattr(models, "get_model", tracking)
    yield built
    for model, before in built:
        assert hook_counts(model) == before, "the CLI left a hook behind"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def only_run(store_dir: Path) -> str:
    ids = TraceStore(store_dir).list()["run_id"].tolist()
    assert len(ids) == 1, ids
    return ids[0]


def test_record_saves_gradients_equal_to_autograd(store_dir, capsys):
    code, out, err = run(capsys, "record", "--model", "simple_model", "--layers", "conv",
                         "--edit", "conv=scale(0.5)", "--param-grads", "--author", "ana",
                         "--notes", "halve conv", "--tags", "halve,seed")
    assert code == 0, err
    rid = only_run(store_dir)
    assert f"saved run {rid}" in out and "grad_output" in out and "edited" in out
    store = TraceStore(store_dir)
    trace = store.load(rid)
    m = store.manifest(rid)
    assert (m["author"], m["notes"], m["tags"]) == ("ana", "halve conv", ["halve", "seed"])
    assert m["meta"]["model"] == "simple_model"
    assert m["meta"]["input"].startswith("randn(1, 1, 4, 4)")

    # independent reference: the same model and input, plain autograd, no hooks
    model = models.SimpleModel()
    model.load_state_dict(models.get_model("simple_model", seed=0).state_dict())
    x = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    c = model.conv(x)
    logits = model.fc(model.relu(c).view(-1, 32))
    score = logits[0, logits.argmax()]
    g_c, g_w = torch.autograd.grad(score, [c, model.conv.weight])
    before = trace.find(layer="conv", role="grad_output")
    after = trace.find(layer="conv", role="edited")
    torch.testing.assert_close(before, g_c, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(after, 0.5 * g_c, rtol=1e-6, atol=1e-7)
    # the halved gradient reaches the conv's weight: upstream parameter gradient halves
    w = trace.find(layer="conv", role="param_grad", index="weight")
    torch.testing.assert_close(w, 0.5 * g_w, rtol=1e-5, atol=1e-7)


def test_record_stats_only_budget_and_activation_edit(store_dir, capsys):
    assert run(capsys, "record", "--model", "simple_cnn", "--layers", "conv1", "conv2",
               "--stats-only", "-q")[0] == 0
    rid = only_run(store_dir)
    m = TraceStore(store_dir).manifest(rid)
    assert m["n_tensors"] == 0 and m["n_events"] > 0
    assert (TraceStore(store_dir).events(rid)["key"] == "").all()

    code, out, _ = run(capsys, "--store", str(store_dir / "b"), "record", "--model",
                       "simple_cnn", "--layers", "conv1", "--max-bytes", "1000")
    assert code == 0 and "budget reached" in out

    code, out, _ = run(capsys, "record", "--model", "simple_cnn", "--layers", "conv1",
                       "--edit", "conv1=zero()", "--edit-target", "activation",
                       "--store", str(store_dir / "c"))  # --store after the command works too
    assert code == 0, out
    ev = TraceStore(store_dir / "c").events(only_run(store_dir / "c"))
    edited = ev[(ev.layer == "conv1") & (ev.role == "edited")]
    assert len(edited) == 1 and edited["norm"].iloc[0] == 0.0


def test_record_quiet_prints_only_the_id(store_dir, capsys):
    code, out, _ = run(capsys, "record", "--model", "simple_model", "-q")
    assert code == 0 and out.strip() == only_run(store_dir)


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_record_exploration_hooks_and_no_save(store_dir, capsys):
    code, out, err = run(capsys, "record", "--model", "simple_model", "--layers", "conv",
                         "--hook", "conv=full_backward,forward_pre", "--target", "sum",
                         "--no-save")
    assert code == 0, err
    assert "not saved" in out and "full_backward" in out
    assert not store_dir.exists() or TraceStore(store_dir).list().empty


@pytest.mark.parametrize("argv,message", [
    (["record", "--model", "nope"], "unknown model"),
    (["record", "--model", "simple_model", "--layers", "convx"], "unknown layer"),
    (["record", "--model", "simple_model", "--edit", "conv=bogus(1)"], "unknown edit"),
    (["record", "--model", "simple_model", "--edit", "conv"], "LAYER=EDIT"),
    (["record", "--model", "simple_model", "--hook", "conv=bogus"], "bogus"),
    (["record", "--model", "simple_model", "--target", "99"], "out of range"),
    (["record", "--model", "simple_model", "--target", "cat"], "class index"),
    (["runs", "show", "../../etc"], "invalid run id"),
    (["runs", "show", "20260101-000000-00000000"], "no run"),
    (["runs", "import", "missing.zip"], "no such file"),
    (["runs", "purge"], "--yes"),
    (["runs", "query", "--column", "bogus"], "unknown event column"),
])
def test_errors_are_one_line_exit_2(store_dir, capsys, no_hook_left, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2
    if "99" in argv:  # failed inside the recording: the model was built and hooked
        assert len(no_hook_left) == 1
    assert err.startswith("error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_runs_commands_round_trip(store_dir, tmp_path, capsys, monkeypatch):
    assert run(capsys, "runs", "list")[1].startswith("no runs")
    for tags in ("a", "b"):
        assert run(capsys, "record", "--model", "simple_model", "--layers", "conv",
                   "--tags", tags, "--author", "ana" if tags == "a" else "bo")[0] == 0
    store = TraceStore(store_dir)
    new, old = store.list()["run_id"].tolist()

    code, out, _ = run(capsys, "runs", "list")
    assert code == 0 and out.index(new) < out.index(old) and "simple_model" in out
    assert old not in run(capsys, "runs", "list", "--tag", "b")[1]
    assert new not in run(capsys, "runs", "list", "--author", "ana")[1]

    code, out, _ = run(capsys, "runs", "show", old)
    assert code == 0 and f"run       {old}" in out and "grad_output" in out
    code, out, _ = run(capsys, "runs", "show", old, "--json")
    assert json.loads(out)["run_id"] == old
    assert "nan_count" in run(capsys, "runs", "show", old, "--events")[1]

    code, out, _ = run(capsys, "runs", "query", "--layer", "conv", "--role", "grad_output")
    assert code == 0 and old in out and new in out
    code, out, _ = run(capsys, "runs", "query", "--layer", "conv", "--role", "grad_output",
                       "--column", "norm", "max", "--csv")
    lines = out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("run_id,created") and lines[0].endswith(
        "norm,max")
    want = store.query(layer="conv", role="grad_output")["norm"].tolist()
    assert [float(ln.split(",")[-2]) for ln in lines[1:]] == pytest.approx(want, rel=1e-12)

    assert run(capsys, "runs", "update", old, "--notes", "baseline", "--tags", "x,y")[0] == 0
    assert store.manifest(old)["tags"] == ["x", "y"]

    zpath = tmp_path / "shared.zip"
    code, out, _ = run(capsys, "runs", "export", old, "-o", str(zpath))
    assert code == 0 and out.strip() == str(zpath) and zipfile.is_zipfile(zpath)
    code, out, _ = run(capsys, "--store", str(tmp_path / "other"), "runs", "import", str(zpath))
    assert code == 0 and out.strip() == f"imported run {old}"
    code, out, _ = run(capsys, "runs", "import", str(zpath))  # the id is taken here
    assert code == 0 and "was taken here" in out

    assert run(capsys, "runs", "delete", old)[0] == 0
    assert old not in run(capsys, "runs", "list")[1]
    assert old in run(capsys, "runs", "trash")[1]
    assert run(capsys, "runs", "restore", old)[0] == 0
    assert old in run(capsys, "runs", "list")[1]
    assert run(capsys, "runs", "delete", old)[0] == 0
    code, out, _ = run(capsys, "runs", "purge", "--yes")
    assert code == 0 and "purged 1 run(s)" in out
    assert "trash is empty" in run(capsys, "runs", "trash")[1]


def test_tampered_import_is_refused_by_the_cli(store_dir, tmp_path, capsys):
    assert run(capsys, "record", "--model", "simple_model", "-q")[0] == 0
    rid = only_run(store_dir)
    zpath = TraceStore(store_dir).export(rid, tmp_path / "r.zip")
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(zpath) as src, zipfile.ZipFile(evil, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, src.read(name))
        dst.writestr("../evil.txt", b"x")
    code, _, err = run(capsys, "--store", str(tmp_path / "other"), "runs", "import", str(evil))
    assert code == 2 and "zip slip" in err
    assert not (tmp_path / "evil.txt").exists()


def test_help_and_usage(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "record" in out and "runs" in out and "examples:" in out
    code, out, _ = run(capsys, "record", "--help")
    assert code == 0 and "--edit-target" in out and "scale(0.5)" in out
    code, out, _ = run(capsys, "runs", "--help")
    assert code == 0 and "export" in out and "restore" in out
    code, out, _ = run(capsys)
    assert code == 0 and "usage:" in out
    code, _, err = run(capsys, "runs", "show")  # missing RUN_ID: argparse's usage error
    assert code == 2 and "run_id" in err
    code, _, err = run(capsys, "runs")
    assert code == 2 and "ACTION" in err


def test_subcommand_registry_is_extensible():
    names = [f.__name__ for f in cli.PARSERS]
    assert names[:6] == ["add_record_parser", "add_cam_parser", "add_train_parser",
                         "add_runs_parser", "add_hooks_parser", "add_models_parser"]
    assert "add_evaluate_parser" in names and len(set(names)) == len(names)

    def add_hello_parser(sub):
        sub.add_parser("hello").set_defaults(func=lambda args: 7)

    cli.PARSERS.append(add_hello_parser)
    try:
        assert cli.main(["hello"]) == 7
    finally:
        cli.PARSERS.remove(add_hello_parser)


def test_python_m_hooklab_help_subprocess():
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    res = subprocess.run([sys.executable, "-m", "hooklab", "--help"], capture_output=True,
                         text=True, cwd=root, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "python -m hooklab record --model simple_cnn" in res.stdout
    assert "Traceback" not in res.stderr
