"""hooklab.evaluate on a local Ray (2 CPUs): the same rows as in-process, a worker that dies
is retried with nothing stored twice. (A cluster that does not answer: test_evaluate.py, where
no Ray is running, since ray_session reuses a running one.)"""

from __future__ import annotations

import pandas as pd
import pytest

from hooklab import TraceStore
from hooklab.studies.cluster import ray_session
from hooklab.studies.evaluation import evaluate

ARGS = dict(n=12, methods=["gradcam", "gradcam++"], metrics=["pointing", "deletion", "insertion"],
            batch_size=4)


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (evaluate reuses it and leaves it running); shut down after."""
    pytest.importorskip("ray")
    with ray_session("local", num_cpus=2) as ray:
        yield ray
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    return evaluate("simple_cnn", "shapes", store=tmp_path_factory.mktemp("inproc"), **ARGS)


@pytest.mark.ray
def test_ray_rows_are_identical_to_in_process(tmp_path, local_ray, in_process):
    res = evaluate("simple_cnn", "shapes", store=tmp_path, ray="local", workers=2, **ARGS)
    # same chunks, same ops, one torch thread per scorer: bit-identical, not merely close
    pd.testing.assert_frame_equal(res.per_image, in_process.per_image, check_exact=True)
    pd.testing.assert_frame_equal(res.summary, in_process.summary, check_exact=True)
    assert res.run_id == in_process.run_id  # the same arguments name the same run
    assert TraceStore(tmp_path).watch_run(res.run_id).status == "finished"


@pytest.mark.ray
def test_a_worker_that_dies_is_retried_and_nothing_is_stored_twice(tmp_path, local_ray,
                                                                   in_process):
    marker = tmp_path / "died"
    res = evaluate("simple_cnn", "shapes", store=tmp_path / "s", ray="local", workers=2,
                   _fault=f"die_once:{marker}", **ARGS)
    assert marker.exists()  # a worker did die (os._exit) on its first chunk
    run = TraceStore(tmp_path / "s").watch_run(res.run_id)
    assert run.status == "finished"
    assert not run.scalars.duplicated(["step", "name"]).any()
    assert sorted(run.steps) == list(range(12)) and len(run.steps) == 12
    pd.testing.assert_frame_equal(res.per_image, in_process.per_image, check_exact=True)
