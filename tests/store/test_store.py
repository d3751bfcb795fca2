"""TraceStore: exact round trips, listing, queries, notes/tags updates, trash, export/import."""

from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile

import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

import hooklab
from hooklab.core.errors import StoreError
from hooklab.core.trace import EVENT_COLUMNS, Trace, shape_str, tensor_stats
from hooklab.store.format import check_run_id, new_run_id
from hooklab.store.runs import TraceStore, summarise_edits
from hooklab.testing.store_stress import synthetic_trace


def event(i: int, t: torch.Tensor | None, *, layer: str = "conv1", role: str = "output",
          key: str | None = None, **extra) -> dict:
    """One event row with every EVENT_COLUMNS field, statistics computed from ``t``."""
    t = t if t is not None else torch.zeros(1)
    row = dict(seq=i, step=0, phase="forward", kind="forward", layer=layer, call=0, role=role,
               index="0", edit="", shape=shape_str(t.shape), dtype=str(t.dtype), device="cpu",
               key=f"{i}:{layer}:{role}" if key is None else key, **tensor_stats(t))
    row.update(extra)
    return row


def two_layer_trace(seed: int = 0, scale: float = 1.0) -> Trace:
    """conv1/conv2 outputs and grad_outputs, an edit pair, a statistics-only row."""
    g = torch.Generator().manual_seed(seed)
    trace = Trace(meta={"model": "simple_cnn", "layers": ["conv1", "conv2"],
                        "edits": [{"layer": "conv2", "edit": {"name": "scale", "k": 0.5},
                                   "target": "grad"}],
                        "input": "randn(2, 3, 32, 32) seed=0", "page": "inspector"})
    rows = [("conv1", "output", "forward"), ("conv2", "output", "forward"),
            ("conv2", "grad_output", "backward"), ("conv2", "edited", "backward"),
            ("conv1", "grad_output", "backward")]
    for i, (layer, role, phase) in enumerate(rows):
        t = torch.randn(2, 4, 3, 3, generator=g) * scale
        edit = '{"k": 0.5, "name": "scale"}' if layer == "conv2" and phase == "backward" else ""
        trace.add_event(event(i, t, layer=layer, role=role, phase=phase, edit=edit,
                              kind="tensor" if phase == "backward" else "forward"), t)
    # a statistics-only event (budget exhausted): key ""
    trace.add_event(event(5, torch.ones(3), layer="fc1", key=""))
    return trace


def assert_same_trace(a: Trace, b: Trace) -> None:
    pd.testing.assert_frame_equal(a.events, b.events, check_exact=True)
    assert sorted(a.tensor_keys()) == sorted(b.tensor_keys())
    for k in a.tensor_keys():
        x, y = a.tensor(k).detach().resolve_conj(), b.tensor(k)
        assert x.dtype == y.dtype and x.shape == y.shape, k
        assert torch.equal(x.reshape(-1).view(torch.uint8), y.reshape(-1).view(torch.uint8)), k


@pytest.fixture
def store(tmp_path) -> TraceStore:
    return TraceStore(tmp_path / "runs", durable=False)


def test_round_trip_is_exact(store):
    trace = two_layer_trace()
    rid = store.save(trace, author="ana", notes="first", tags="a, b,a")
    loaded = store.load(rid)
    assert_same_trace(trace, loaded)
    assert loaded.meta == json.loads(json.dumps(trace.meta))
    pd.testing.assert_frame_equal(store.events(rid), trace.events, check_exact=True)
    m = store.manifest(rid)
    assert (m["run_id"], m["author"], m["notes"], m["tags"]) == (rid, "ana", "first", ["a", "b"])
    assert m["format_version"] == 1 and m["n_events"] == 6 and m["n_tensors"] == 5
    assert m["versions"]["torch"] == torch.__version__
    assert m["created"].endswith("+00:00")
    assert sorted(os.listdir(store.root / rid)) == [
        "events.parquet", "manifest.json", "tensors.safetensors"]


def test_file_is_plain_safetensors_and_parquet(store):
    """An independent reader (safetensors.torch.load_file, pandas) sees the same data."""
    trace = two_layer_trace()
    rid = store.save(trace)
    ref = load_file(str(store.root / rid / "tensors.safetensors"))
    assert set(ref) == set(trace.tensor_keys())
    for k, v in ref.items():
        assert torch.equal(v, trace.tensor(k))
    ev = pd.read_parquet(store.root / rid / "events.parquet")
    assert list(ev.columns) == list(EVENT_COLUMNS)
    assert ev["norm"].tolist() == trace.events["norm"].tolist()


def test_tensors_are_lazy_and_read_only(store):
    trace = two_layer_trace()
    rid = store.save(trace)
    loaded = store.load(rid)
    assert type(loaded._tensors).__name__ == "LazyTensors"
    key = loaded.tensor_keys()[0]
    t = loaded.tensor(key)
    t.add_(100.0)  # changing a returned tensor changes neither a later read nor the file
    assert torch.equal(loaded.tensor(key), trace.tensor(key))
    assert torch.equal(store.load(rid).tensor(key), trace.tensor(key))
    with pytest.raises(KeyError):
        loaded.tensor("nope")


def test_nan_inf_and_shared_views_round_trip(store):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    weird = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 1e-45])
    trace = Trace(meta={"model": "x"})
    parts = {"view0": base[0], "view_t": base.t(), "whole": base, "weird": weird,
             "scalar": torch.tensor(3.5), "empty": torch.zeros(0, 3),
             "conj_view": torch.tensor([1 + 2j, 3 - 1j], dtype=torch.complex64).conj(),
             "parameter": torch.nn.Parameter(torch.ones(2, 2)),
             "offset_view": base.reshape(-1)[5:11]}
    for i, (k, t) in enumerate(parts.items()):
        trace.add_event(event(i, t, key=k), t)
    loaded = store.load(store.save(trace))
    assert_same_trace(trace, loaded)
    assert torch.equal(loaded.tensor("conj_view"), torch.tensor([1 - 2j, 3 + 1j]))
    assert loaded.events.loc[3, "nan_count"] == 1 and math.isinf(loaded.tensor("weird")[1])


_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64,
           torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool, torch.complex64]


@st.composite
def tensors(draw):
    dtype = draw(st.sampled_from(_DTYPES))
    shape = draw(st.lists(st.integers(0, 5), min_size=0, max_size=4))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    raw = torch.randint(0, 256, (max(1, math.prod(shape)) * torch.empty((), dtype=dtype)
                                 .element_size(),), dtype=torch.uint8, generator=g)
    t = raw.view(dtype)[: math.prod(shape)].reshape(shape)  # random bits: NaNs, infs, subnormals
    if draw(st.booleans()) and t.dim() >= 2:
        t = t.transpose(0, 1)  # non-contiguous
    return t


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(tensors(), min_size=0, max_size=5),
       st.text(max_size=20), st.lists(st.text(min_size=1, max_size=8), max_size=3))
def test_property_round_trip_any_shape_and_dtype(ts, notes, tags):
    with tempfile.TemporaryDirectory() as d:
        store = TraceStore(d, durable=False)
        trace = Trace(meta={"notes": notes, "n": len(ts)})
        for i, t in enumerate(ts):
            # statistics of a fixed tensor: the payload's bits are what this test is about
            trace.add_event(event(i, torch.ones(2), key=f"k{i}", dtype=str(t.dtype),
                                  shape=shape_str(t.shape)), t)
        rid = store.save(trace, notes=notes, tags=tags)
        loaded = store.load(rid)
        assert_same_trace(trace, loaded)
        m = store.manifest(rid)
        assert m["notes"] == notes
        want = []
        for t in (p.strip() for tag in tags for p in tag.split(",")):
            if t and t not in want:
                want.append(t)
        assert m["tags"] == want
        # a loaded (lazy) trace saves again to an identical run
        assert_same_trace(trace, store.load(store.save(loaded)))


def test_unstorable_dtype_is_a_store_error(store):
    trace = Trace()
    t = torch.zeros(2, dtype=torch.complex128)
    trace.add_event(event(0, torch.zeros(2), key="c"), t)
    with pytest.raises(StoreError, match="complex128"):
        store.save(trace)
    assert store.list().empty and not [p for p in store.root.iterdir() if p.name.startswith(".tmp")]


def test_list_newest_first_with_filters(store):
    a = store.save(two_layer_trace(), author="ana", tags=["baseline"])
    b = store.save(synthetic_trace(2, 8), author="bo", tags="halve,cnn", notes="n")
    df = store.list()
    assert list(df.columns) == ["run_id", "created", "author", "model", "page", "edits", "tags",
                                "notes", "n_events", "status"]
    assert df["run_id"].tolist() == [b, a]  # newest first
    row = df.set_index("run_id").loc[a]
    assert (row["model"], row["page"], row["edits"], row["n_events"], row["status"]) == (
        "simple_cnn", "inspector", "conv2=scale(0.5)", 6, "ok")
    assert store.list(author="ana")["run_id"].tolist() == [a]
    assert store.list(tag="halve")["run_id"].tolist() == [b]
    assert store.list(tag="hal").empty


def test_summarise_edits_forms():
    assert summarise_edits(None) == ""
    assert summarise_edits({"conv2": "scale(0.5)"}) == "conv2=scale(0.5)"
    assert summarise_edits([{"layer": "fc1", "edit": {"name": "zero"},
                             "target": "activation"}]) == "fc1=zero()@activation"


def test_query_across_runs_matches_each_run(store):
    ids = [store.save(two_layer_trace(seed=s, scale=s + 1.0)) for s in range(3)]
    q = store.query(layer="conv2", role="grad_output", column="norm")
    assert q["run_id"].tolist() == ids  # oldest first, one row per run
    for rid in ids:
        ev = store.events(rid)
        want = ev[(ev.layer == "conv2") & (ev.role == "grad_output")]["norm"].tolist()
        assert q[q.run_id == rid]["norm"].tolist() == want
    both = store.query(layer=["conv1", "conv2"], role="grad_output", column=["norm", "max"])
    assert len(both) == 6 and {"norm", "max", "layer", "seq"} <= set(both.columns)
    assert store.query(kinds="forward", role="output")["layer"].tolist() == ["conv1", "conv2",
                                                                             "fc1"] * 3
    assert store.query(layer="nothing").empty
    with pytest.raises(StoreError, match="unknown event column"):
        store.query(column="bogus")


def test_update_notes_and_tags_only(store):
    rid = store.save(two_layer_trace(), notes="old", tags="a")
    before = {p.name: p.read_bytes() for p in (store.root / rid).iterdir()
              if p.name != "manifest.json"}
    m = store.update(rid, notes="new", tags=["x", "y"])
    assert (m["notes"], m["tags"]) == ("new", ["x", "y"]) and "updated" in m
    assert store.manifest(rid)["notes"] == "new"
    after = {p.name: p.read_bytes() for p in (store.root / rid).iterdir()
             if p.name != "manifest.json"}
    assert after == before  # data files untouched, no temp file left
    store.verify(rid)
    store.update(rid, tags="")
    assert store.list()["tags"].tolist() == [""]


def test_trash_restore_purge(store):
    a = store.save(two_layer_trace())
    b = store.save(two_layer_trace(1))
    store.delete(a)
    assert store.list()["run_id"].tolist() == [b]
    assert store.trash_list()["run_id"].tolist() == [a]
    with pytest.raises(StoreError, match="in the trash"):
        store.load(a)
    store.restore(a)
    assert_same_trace(two_layer_trace(), store.load(a))
    assert store.trash_list().empty
    store.delete(a)
    store.delete(b)
    assert store.purge(a) == [a]
    assert store.trash_list()["run_id"].tolist() == [b]
    assert store.purge(older_than=3600) == []
    assert store.purge() == [b]
    assert store.list().empty and store.trash_list().empty
    with pytest.raises(StoreError, match="no run"):
        store.restore(a)


def test_export_import_identical(store, tmp_path):
    trace = two_layer_trace()
    rid = store.save(trace, author="ana", notes="to share", tags="x")
    zpath = store.export(rid, tmp_path / "out.zip")
    assert zpath == tmp_path / "out.zip"
    assert sorted(zipfile.ZipFile(zpath).namelist()) == sorted(
        ["manifest.json", "events.parquet", "tensors.safetensors"])
    other = TraceStore(tmp_path / "colleague", durable=False)
    rid2 = other.import_(zpath)
    assert rid2 == rid  # free id: kept, every file byte-identical
    for name in ("manifest.json", "events.parquet", "tensors.safetensors"):
        assert (other.root / rid / name).read_bytes() == (store.root / rid / name).read_bytes()
    assert_same_trace(trace, other.load(rid))
    # importing into a store that has the id gives a new id, recorded in the manifest
    rid3 = store.import_(zpath)
    assert rid3 != rid
    m = store.manifest(rid3)
    assert m["imported_from"] == rid and m["notes"] == "to share"
    assert_same_trace(trace, store.load(rid3))


def test_export_default_path_and_folder(store, tmp_path, monkeypatch):
    rid = store.save(synthetic_trace(1, 4))
    monkeypatch.chdir(tmp_path)
    assert store.export(rid) == tmp_path / f"{rid}.zip"
    (tmp_path / "exports").mkdir()
    assert store.export(rid, tmp_path / "exports") == tmp_path / "exports" / f"{rid}.zip"
    assert not [p for p in tmp_path.rglob("*.part")]


def test_explicit_run_id_and_collision(store):
    assert store.save(synthetic_trace(1, 4), run_id="baseline-1") == "baseline-1"
    with pytest.raises(StoreError, match="already used"):
        store.save(synthetic_trace(1, 4), run_id="baseline-1")
    store.delete("baseline-1")
    with pytest.raises(StoreError, match="already used"):  # a trashed id is still taken
        store.save(synthetic_trace(1, 4), run_id="baseline-1")


def test_run_ids_are_sortable_and_valid():
    ids = [new_run_id() for _ in range(200)]
    assert len(set(ids)) == 200
    assert all(check_run_id(i) == i for i in ids)
    assert ids[0][:15] <= ids[-1][:15]


def test_root_from_env_and_lazy_export(tmp_path, monkeypatch):
    monkeypatch.setenv("HOOKLAB_STORE", str(tmp_path / "envstore"))
    s = hooklab.TraceStore()
    assert s.root == (tmp_path / "envstore").resolve() and s.root.is_dir()
    monkeypatch.delenv("HOOKLAB_STORE")
    monkeypatch.chdir(tmp_path)
    assert TraceStore().root == (tmp_path / "hooklab-runs").resolve()


def test_root_that_is_a_file_is_a_store_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(StoreError, match="not a folder"):
        TraceStore(tmp_path / "f")
