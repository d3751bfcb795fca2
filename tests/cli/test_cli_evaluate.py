"""`python -m hooklab evaluate`: what it prints and writes equals the library's result; a re-run
resumes; progress reaches stderr; bad input is one `error:` line and stores nothing."""

from __future__ import annotations

import io
import re

import pandas as pd
import pytest

from hooklab.cli.evaluate import ProgressBar
from hooklab.cli.main import main
from hooklab.store.runs import TraceStore
from hooklab.studies.evaluation import evaluate, read_evaluation

ARGS = ["evaluate", "--model", "simple_cnn", "-n", "8", "--batch-size", "4", "--steps", "8",
        "--method", "gradcam", "hirescam", "--metric", "pointing", "deletion", "insertion"]
#: One printed summary row: method, layer, metric, n, mean, sd.
ROW = re.compile(r"^\s*(\S+)\s+(conv3)\s+(\S+)\s+(\d+)\s+(-?[\d.]+)\s+(-?[\d.]*)\s*$",
                 re.MULTILINE)


def test_printed_summary_and_csv_equal_the_library_run(tmp_path, capsys):
    csv = tmp_path / "per_image.csv"
    assert main(["--store", str(tmp_path / "cli"), *ARGS, "--csv", str(csv)]) == 0
    out = capsys.readouterr()
    store = TraceStore(tmp_path / "cli")
    (run_id,) = store.run_ids()
    assert f"run {run_id}: 8 images (scored 8)" in out.out
    lib = evaluate("simple_cnn", "shapes", n=8, batch_size=4, steps=8,
                   methods=["gradcam", "hirescam"], metrics=["pointing", "deletion", "insertion"],
                   store=tmp_path / "lib")
    assert lib.run_id == run_id  # the same arguments give the same resumable key
    rows = ROW.findall(out.out)
    assert len(rows) == len(lib.summary) == 6
    for (method, layer, metric, n, mean, _sd), ref in zip(rows, lib.summary.itertuples()):
        assert (method, layer, metric, int(n)) == (ref.method, ref.layer, ref.metric, ref.n)
        assert float(mean) == pytest.approx(ref.mean, abs=6e-5)
    stored = read_evaluation(store, run_id).per_image
    pd.testing.assert_frame_equal(stored.reset_index(drop=True),
                                  lib.per_image.reset_index(drop=True))
    written = pd.read_csv(csv)
    assert len(written) == 16 and not (tmp_path / "per_image.csv.part").exists()
    pd.testing.assert_series_equal(written["deletion_auc"], stored["deletion_auc"],
                                   check_dtype=False, rtol=1e-6)
    # the progress bar went to stderr, ending at 8/8
    assert "8/8 images" in out.err.splitlines()[-1]


def test_a_rerun_resumes_and_scores_nothing_again(tmp_path, capsys):
    assert main(["--store", str(tmp_path), *ARGS]) == 0
    capsys.readouterr()
    assert main(["--store", str(tmp_path), *ARGS]) == 0
    assert "(scored 0, resumed past 8)" in capsys.readouterr().out
    assert len(TraceStore(tmp_path).run_ids()) == 1
    assert main(["--store", str(tmp_path), *ARGS, "--new", "-q"]) == 0
    assert capsys.readouterr().out.strip() in TraceStore(tmp_path).run_ids()
    assert len(TraceStore(tmp_path).run_ids()) == 2


def test_progress_bar_prints_every_tenth_when_not_a_terminal():
    stream = io.StringIO()
    bar = ProgressBar(stream)
    for done in range(0, 101, 5):
        bar(done, 100)
    lines = stream.getvalue().splitlines()
    assert [int(re.search(r"\] (\d+)/100", line).group(1)) for line in lines] == \
        list(range(0, 101, 10))
    assert lines[-1].startswith("[" + "#" * 30 + "]")


@pytest.mark.parametrize("extra, match", [
    (["--data", "imagefolder:/nonexistent/val"], "one subfolder per class"),
    (["--metric", "accuracy"], "unknown metric"),
    (["--layer", "conv9"], "conv9"),
    (["-n", "0"], "-n must be a positive"),
    (["--ray", "127.0.0.1:9", "--ray-timeout", "2"], "does not answer|pip install"),
])
def test_bad_input_is_one_error_line_and_nothing_is_stored(tmp_path, capsys, extra, match):
    assert main(["--store", str(tmp_path), *ARGS, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and re.search(match, err[0])
    assert TraceStore(tmp_path).run_ids() == []
