"""`python -m hooklab sweep run | list | show`: what `run` prints is what the store holds (and
`show` prints it again from the store alone); bad edit text, an unknown layer, bad sizes and a
cluster that does not answer are one error line before any trial; a failed trial is exit code 1
with the others stored."""

from __future__ import annotations

import re
import socket
import time

import pytest

from hooklab.cli.main import main
from hooklab.store.runs import TraceStore
from hooklab.studies.sweep import list_sweeps, load_sweep
from hooklab.testing import sweep_faults
from tests.models.registry_helpers import saved_registry

SMALL = ["--steps", "2", "--batch-size", "16", "--n-train", "64", "--n-test", "32"]
RUN_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{8}-t\d{3}")


def _sweep(tmp_path, *args: str) -> list[str]:
    return ["--store", str(tmp_path / "runs"), "sweep", *args]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_prints_the_trials_the_store_holds_and_show_prints_them_again(tmp_path, capsys):
    code = main(_sweep(tmp_path, "run", "--edit", "", "--edit", "conv2=scale(0.5)", "--seeds",
                       "0", "1", "--in-process", "--name", "two arms", *SMALL))
    cap = capsys.readouterr()
    assert code == 0, cap.err
    sweep_id = re.search(r"sweep (sweep-\S+):", cap.out).group(1)
    store = TraceStore(tmp_path / "runs")
    trials = load_sweep(store, sweep_id).trials
    assert RUN_ID.findall(cap.out) == trials["run_id"].tolist()
    assert len(trials) == 4 and (trials["status"] == "finished").all()
    assert trials["seed"].tolist() == [0, 1, 0, 1]
    lines = [ln for ln in cap.out.splitlines() if RUN_ID.search(ln)]
    assert [("no edit" in ln, "conv2=scale(0.5)" in ln) for ln in lines] == [
        (True, False), (True, False), (False, True), (False, True)]
    for ln, acc, loss in zip(lines, trials["final_accuracy"], trials["final_loss"],
                             strict=True):
        assert f"{acc:.4f}" in ln and f"{loss:.4f}" in ln
    assert "(in-process," in cap.out
    assert [ln for ln in cap.err.splitlines() if ln.startswith("[")][-1].startswith("[4/4]")
    m = store.manifest(trials["run_id"][0])
    assert m["meta"]["train"]["n_train"] == 64 and m["meta"]["train"]["steps"] == 2

    assert main(_sweep(tmp_path, "show", sweep_id)) == 0
    shown = capsys.readouterr().out
    assert "two arms" in shown and RUN_ID.findall(shown) == trials["run_id"].tolist()
    assert main(_sweep(tmp_path, "list")) == 0
    listed = capsys.readouterr().out
    assert sweep_id in listed and "two arms" in listed
    assert list_sweeps(store)["runs"].tolist() == [4]

    assert main(_sweep(tmp_path, "run", "-q", "--edit", "", "--in-process", *SMALL)) == 0
    quiet = capsys.readouterr()
    assert quiet.out.split() == [quiet.out.strip()] and quiet.out.startswith("sweep-")
    assert quiet.out.strip() != sweep_id and quiet.err == ""
    assert len(list_sweeps(store)) == 2


def test_run_without_edit_is_the_baseline_and_the_seeds_halving(tmp_path, capsys):
    assert main(_sweep(tmp_path, "run", "-q", "--in-process", *SMALL)) == 0
    sweep_id = capsys.readouterr().out.strip()
    trials = load_sweep(TraceStore(tmp_path / "runs"), sweep_id).trials
    assert trials["config"].tolist() == ["", "conv2=scale(0.5)"]


@pytest.mark.parametrize("args,match", [
    (["--edit", "conv2=scal(0.5)"], "unknown edit 'scal'"),
    (["--edit", "conv2 scale(0.5)"], "LAYER=EDIT"),
    (["--edit", "conv9=scale(0.5)"], "conv9"),
    (["--edit", "conv2=halve", "--edit", "conv2=scale(0.5)"], "twice"),
    (["--seeds", "0", "0"], "repeat"),
    (["--steps", "0"], "steps"),
    (["--n-test", "-1"], "n_test"),
    (["--batch-size", "128"], "exceeds")])
def test_bad_input_is_one_error_line_before_any_trial(tmp_path, capsys, args, match):
    code = main(_sweep(tmp_path, "run", "--edit", "", "--in-process", *SMALL, *args))
    err = capsys.readouterr().err
    assert code == 2 and re.search(match, err), err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert TraceStore(tmp_path / "runs").run_ids() == []


def test_a_read_only_store_is_refused_before_any_trial(capsys):
    """/proc/self is an existing folder nobody can create files in (root neither)."""
    code = main(["--store", "/proc/self", "sweep", "run", "--edit", "", "--in-process", *SMALL])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: store ") and "read-only" in err
    assert err.count("\n") == 1 and "[1/1]" not in err


def test_a_failed_trial_is_exit_code_1_and_the_others_are_stored(tmp_path, capsys):
    with saved_registry():
        sweep_faults.register()  # the registry may have been reset since the module's import
        code = main(_sweep(tmp_path, "--models", sweep_faults.MODULE, "run", "--model",
                           "sweep_raising_cnn", "--edit", "", "--seeds", "0", "1",
                           "--in-process", "--steps", "4", "--batch-size", "16",
                           "--n-train", "64", "--n-test", "32"))
    cap = capsys.readouterr()
    assert code == 1 and "1 of 2 trial(s) failed" in cap.err
    assert "injected fault" in cap.out
    trials = load_sweep(TraceStore(tmp_path / "runs"), re.search(
        r"sweep (sweep-\S+):", cap.out).group(1)).trials
    assert trials["status"].tolist() == ["finished", "failed"]
    assert "injected fault" in trials["message"][1]


def test_show_list_and_usage_say_what_is_wrong(tmp_path, capsys):
    assert main(_sweep(tmp_path, "show", "sweep-nope")) == 2
    err = capsys.readouterr().err
    assert "no sweep 'sweep-nope'" in err and err.count("\n") == 1
    assert main(_sweep(tmp_path, "list")) == 0
    assert "no sweeps in" in capsys.readouterr().out
    assert main(_sweep(tmp_path, "show")) == 2
    assert "sweep_id" in capsys.readouterr().err  # argparse: the argument is required
    assert main(_sweep(tmp_path, "sweep-x")) == 2
    assert "invalid choice: 'sweep-x'" in capsys.readouterr().err
    assert main(_sweep(tmp_path)) == 2  # no action: the usage, listing the actions
    usage = capsys.readouterr().err
    assert all(word in usage for word in ("run", "list", "show", "ACTION"))
    assert main(_sweep(tmp_path, "run", "--ray", "local", "--in-process")) == 2
    assert "not allowed with" in capsys.readouterr().err
    assert TraceStore(tmp_path / "runs").run_ids() == []


def test_a_cluster_that_does_not_answer_is_one_line_within_the_timeout(tmp_path, capsys):
    pytest.importorskip("ray")
    port = _closed_port()
    t0 = time.monotonic()
    code = main(_sweep(tmp_path, "run", "--edit", "", "--ray", f"127.0.0.1:{port}",
                       "--ray-timeout", "2", *SMALL))
    err = capsys.readouterr().err
    assert code == 2 and f"127.0.0.1:{port}" in err and "does not answer" in err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert time.monotonic() - t0 < 15
    assert TraceStore(tmp_path / "runs").run_ids() == []


def test_without_ray_or_in_process_the_environment_names_the_cluster(tmp_path, capsys,
                                                                      monkeypatch):
    pytest.importorskip("ray")
    port = _closed_port()
    monkeypatch.setenv("HOOKLAB_RAY_ADDRESS", f"127.0.0.1:{port}")
    code = main(_sweep(tmp_path, "run", "--edit", "", "--ray-timeout", "1", *SMALL))
    err = capsys.readouterr().err
    assert code == 2 and f"127.0.0.1:{port}" in err and "does not answer" in err
    # --in-process ignores the variable
    assert main(_sweep(tmp_path, "run", "-q", "--edit", "", "--in-process", *SMALL)) == 0
    assert capsys.readouterr().out.startswith("sweep-")


@pytest.mark.ray
def test_run_on_a_local_ray(tmp_path, capsys):
    pytest.importorskip("ray")
    code = main(_sweep(tmp_path, "run", "--edit", "conv2=scale(0.5)", "--ray", "local",
                       "--ray-cpus", "1", *SMALL))
    cap = capsys.readouterr()
    assert code == 0, cap.err
    assert "(local," in cap.out
    ids = RUN_ID.findall(cap.out)
    store = TraceStore(tmp_path / "runs")
    assert len(ids) == 1 and store.watch_run(ids[0]).status == "finished"
    assert store.manifest(ids[0])["meta"]["sweep"]["config"] == "conv2=scale(0.5)"
