"""``--models`` and ``$HOOKLAB_MODELS`` on the CLI: ``record`` and ``cam`` on the example lab
model, ``hooklab models``, and an import error as one warning line (an error only when the
model it would have registered is asked for)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from hooklab.cam import engine as cam
from hooklab.cli import main as cli
from hooklab.models import inputs, registry, zoo
from hooklab.store.runs import TraceStore
from tests.conftest import hook_counts
from tests.models.registry_helpers import LAB, LAB_MODULE, ROOT, forget_lab, saved_registry


@pytest.fixture(autouse=True)
def lab_path(monkeypatch, tmp_path):
    """The example lab importable (not registered yet), a store in tmp, the registry restored."""
    monkeypatch.syspath_prepend(str(LAB))
    monkeypatch.delenv(registry.ENV_VAR, raising=False)
    monkeypatch.setenv("HOOKLAB_STORE", str(tmp_path / "runs"))
    forget_lab()
    with saved_registry():
        yield tmp_path / "runs"
    forget_lab()


@pytest.fixture(autouse=True)
def no_hook_left(monkeypatch):
    """Every model the CLI builds ends with exactly the hooks it was built with."""
    built: list[tuple[torch.nn.Module, dict]] = []
    real = zoo.get_model

    def tracking(*args, **kwargs):
        model = real(*args, **kwargs)
        built.append((model, hook_counts(model)))
        return model

    monkeypatch.setattr(zoo, "get_model", tracking)
    yield built
    for model, before in built:
        assert hook_counts(model) == before, "a hook was left behind"


@pytest.mark.parametrize("where", ["before", "after"])
def test_record_with_models_option(where, lab_path, capsys, no_hook_left):
    opt = ["--models", f"nothing_here_xyz,{LAB_MODULE}"]
    cmd = ["record", "--model", "lab_resnet", "--edit", "down=halve", "--param-grads"]
    argv = [*opt, *cmd] if where == "before" else [*cmd, *opt]
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    assert err.strip() == ("warning: could not load model module 'nothing_here_xyz' (named in "
                           "--models): ModuleNotFoundError: No module named 'nothing_here_xyz'")
    assert "lab_resnet, input randn(1, 3, 32, 32) seed=0" in out
    store = TraceStore(lab_path)
    [rid] = store.list()["run_id"]
    trace = store.load(rid)
    assert trace.meta["model"] == "lab_resnet"
    assert trace.meta["weights"].endswith("lab_resnet.safetensors")
    ev = trace.events
    assert {"stem", "block1.conv2", "down", "block2.conv1", "fc"} <= set(ev.layer)
    # the halving happened: the edited event's gradient is half the one before it
    edited = ev[(ev.layer == "down") & (ev.role == "edited")]
    before = ev[(ev.layer == "down") & (ev.role == "grad_output")]
    assert len(edited) == 1 and len(before) == 1
    torch.testing.assert_close(trace.tensor(edited.iloc[0]["key"]),
                               0.5 * trace.tensor(before.iloc[0]["key"]))
    [(model, _)] = no_hook_left
    assert type(model).__module__ == LAB_MODULE  # the registered file's weights, not random
    assert model.hooklab_info.weights.endswith("lab_resnet.safetensors")


def test_cam_with_env_var_matches_the_library(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(registry.ENV_VAR, LAB_MODULE)
    png, npy = tmp_path / "cam.png", tmp_path / "maps.npy"
    code = cli.main(["cam", "--model", "lab_resnet", "--index", "5", "--method", "gradcam",
                     "--out", str(png), "--npy", str(npy)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert err == ""
    assert "layer block2" in out  # the registered cam_layer
    model = zoo.get_model("lab_resnet")
    sample = inputs.shapes_input(5, model.hooklab_info)
    ref = cam.compute(model, sample.x, "gradcam")
    assert ref.layer == "block2"
    np.testing.assert_allclose(np.load(npy), ref.maps.numpy(), atol=1e-6)
    assert png.stat().st_size > 0
    # the class printed is the model's own class name
    assert f"class {model.hooklab_info.class_names[int(ref.targets[0])]}" in out


def test_import_error_is_a_warning_then_the_missing_model_an_error(capsys):
    assert cli.main(["--models", "broken_lab_xyz", "record", "--model", "simple_model",
                     "--no-save", "-q"]) == 0  # the zoo still works
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: could not load model module "
                                               "'broken_lab_xyz'")
    assert cli.main(["--models", "broken_lab_xyz", "record", "--model", "lab_resnet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("warning: ")
    assert err[1].startswith("error: unknown model 'lab_resnet'.")
    assert "broken_lab_xyz" in err[1]  # the failed module is named where the model is missing


def test_models_subcommand_lists_zoo_and_registered(capsys):
    assert cli.main(["models", "--models", LAB_MODULE]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {ln.split()[0]: ln.split() for ln in lines[1:] if ln.strip()}
    assert rows["simple_cnn"][1:3] == ["zoo", "3x32x32"]
    assert rows["resnet18"][1:3] == ["zoo", "3x224x224"]
    assert rows["lab_resnet"][1:5] == [LAB_MODULE, "3x32x32", "6", "lab_resnet.safetensors"]


def test_python_m_hooklab_with_env_var_subprocess(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(LAB)]),
           registry.ENV_VAR: LAB_MODULE, "HOOKLAB_STORE": str(tmp_path / "runs")}
    res = subprocess.run([sys.executable, "-m", "hooklab", "record", "--model", "lab_resnet",
                          "--stats-only", "-q"], capture_output=True, text=True, cwd=tmp_path,
                         env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    rid = res.stdout.strip()
    assert TraceStore(tmp_path / "runs").manifest(rid)["meta"]["model"] == "lab_resnet"
