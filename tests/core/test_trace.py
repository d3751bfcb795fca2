"""Tensor statistics against a float64 numpy reference; the Trace container."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hooklab.core.trace import EVENT_COLUMNS, Trace, parse_shape, shape_str, tensor_stats


def reference(a: np.ndarray) -> dict:
    a = a.astype(np.float64).ravel()
    fin = a[np.isfinite(a)]
    return dict(
        numel=a.size, mean=fin.mean(), std=fin.std(ddof=1) if fin.size > 1 else 0.0,
        min=fin.min(), max=fin.max(), zero_frac=float((a == 0).mean()),
        nan_count=int(np.isnan(a).sum()), inf_count=int(np.isinf(a).sum()),
        norm=np.sqrt((a.astype(np.float64) ** 2).sum()),
    )


def check(t: torch.Tensor) -> None:
    got = tensor_stats(t)
    ref = reference(t.detach().double().numpy())
    for k in ("numel", "nan_count", "inf_count"):
        assert got[k] == ref[k], k
    for k in ("mean", "min", "max", "zero_frac"):
        assert got[k] == pytest.approx(ref[k], rel=1e-5, abs=1e-6 * (1 + abs(ref["max"]))), k
    assert got["std"] == pytest.approx(ref["std"], rel=1e-3, abs=1e-6), "std"
    if ref["inf_count"] == 0:
        assert got["norm"] == pytest.approx(ref["norm"], rel=1e-5), "norm"
    else:
        assert got["norm"] == float("inf")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=0, max_size=4), st.integers(0, 9999),
       st.floats(-1e3, 1e3), st.floats(1e-3, 1e2), st.floats(0, 0.6))
def test_stats_match_float64_reference(shape, seed, loc, scale, zeros):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(shape, generator=g) * scale + loc
    t[torch.rand(shape, generator=g) < zeros] = 0
    check(t)


def test_stats_large_mean_small_std_do_not_cancel():
    t = torch.full((100_000,), 1000.0) + torch.randn(100_000) * 1e-2
    got = tensor_stats(t)
    assert got["std"] == pytest.approx(float(t.double().std()), rel=1e-2)


def test_stats_nan_inf_and_special_dtypes():
    t = torch.tensor([1.0, float("nan"), -float("inf"), 3.0, 0.0])
    got = tensor_stats(t)
    assert (got["nan_count"], got["inf_count"]) == (1, 1)
    assert got["min"] == 0.0 and got["max"] == 3.0 and got["zero_frac"] == 0.2
    check(torch.arange(10, dtype=torch.int64))
    check(torch.randn(7, dtype=torch.float64))
    check(torch.tensor(5.0))
    assert tensor_stats(torch.empty(0))["numel"] == 0
    allnan = tensor_stats(torch.full((3,), float("nan")))
    assert allnan["nan_count"] == 3 and np.isnan(allnan["mean"])


def test_shape_strings_round_trip():
    for s in [(), (1,), (1, 2, 4, 4)]:
        assert parse_shape(shape_str(s)) == s


def _row(seq, key=""):
    row = {c: 0 for c in EVENT_COLUMNS}
    row.update(seq=seq, phase="forward", kind="forward", layer="a", role="output", index="0",
               edit="", shape="2", dtype="torch.float32", device="cpu", key=key,
               **{k: float(v) for k, v in tensor_stats(torch.ones(2)).items() if k != "numel"})
    return row


def test_trace_add_select_find_and_dtypes():
    tr = Trace(meta={"model": "m"})
    tr.add_event(_row(0, "k0"), torch.ones(2))
    tr.add_event(_row(1))
    ev = tr.events
    assert list(ev.columns) == list(EVENT_COLUMNS)
    assert ev.seq.dtype == np.int64 and ev["mean"].dtype == np.float64
    assert torch.equal(tr.find(seq=0), torch.ones(2))
    with pytest.raises(KeyError, match="statistics only"):
        tr.tensor("")
    with pytest.raises(KeyError, match="no event"):
        tr.find(layer="zzz")
    tr.add_event(_row(2))  # adding after reading keeps earlier rows
    assert list(tr.events.seq) == [0, 1, 2]
    rebuilt = Trace(events=tr.events, tensors=tr.tensors(), meta=tr.meta)
    pd.testing.assert_frame_equal(rebuilt.events, tr.events)
    with pytest.raises(ValueError, match="lacks columns"):
        Trace(events=pd.DataFrame({"seq": [1]}))


def test_stats_of_huge_finite_values_do_not_overflow_or_recurse():
    t = torch.tensor([-3.8, 1.85e24, 3e38, -3e38])
    got = tensor_stats(t)
    assert got["nan_count"] == got["inf_count"] == 0
    assert got["max"] == pytest.approx(3e38, rel=1e-6) and got["min"] == pytest.approx(-3e38, rel=1e-6)
    assert got["norm"] == pytest.approx(float(t.double().norm()), rel=1e-6)
    assert got["std"] == pytest.approx(float(t.double().std()), rel=1e-6)


def test_chunked_statistics_of_a_large_tensor_match_reference():
    from hooklab.core.trace import STATS_CHUNK

    g = torch.Generator().manual_seed(3)
    t = torch.randn(STATS_CHUNK * 2 + 12345, generator=g) * 2 + 0.5
    t[:1000] = 0
    t[-5] = -40.0
    t[7] = 55.0
    check(t)


def test_record_event_builds_the_one_row():
    from hooklab.core.trace import EVENT_COLUMNS, Trace, tensor_stats

    tr = Trace()
    x = torch.arange(6.0, dtype=torch.float64).reshape(2, 3)
    row = tr.record_event("forward", "forward_pre", "", "input", x, key="model_input")
    assert set(row) == set(EVENT_COLUMNS)
    assert row["seq"] == 0 and row["shape"] == "2x3" and row["dtype"] == "torch.float64"
    assert row["norm"] == tensor_stats(x)["norm"]
    assert tr.tensor("model_input").dtype == torch.float32
    assert torch.equal(tr.tensor("model_input"), x.float())
    assert tr.stored_bytes == 6 * 4
    row2 = tr.record_event("backward", "tensor", "fc", "grad_output", x, call=1, index="0",
                           step=3, keep=False)
    assert row2["seq"] == 1 and row2["key"] == "" and row2["step"] == 3 and row2["call"] == 1
    assert tr.next_seq() == 2 and len(tr.events) == 2
    assert tr.record_event("forward", "forward", "fc", "output", x)["key"] == "t0000002"
    assert list(tr.events.columns) == list(EVENT_COLUMNS)


def test_rows_from_values_equal_the_normalised_frame_in_firing_order():
    """The column-wise frame of ``add_values`` rows is the frame ``normalise_events`` builds
    from the same rows (dtypes, values, a non-str index made str), in ``seq`` order even when
    rows arrive out of it (a recorder's batched parameter gradients)."""
    from hooklab.core.trace import events_from_values, normalise_events

    g = torch.Generator().manual_seed(2)
    tr = Trace()
    order = [0, 1, 4, 2, 3]
    rows = []
    for seq in order:
        t = torch.randn(2, seq + 1, generator=g)
        values = Trace.event_values(seq, "backward", "tensor", f"l{seq}", "grad_output", t,
                                    call=seq % 2, index=seq, step=7)
        rows.append(values)
        tr.add_values(values)
    assert all(isinstance(v[7], str) for v in rows)  # index given as an int is stored as str
    ev = tr.events
    assert ev["seq"].tolist() == [0, 1, 2, 3, 4]
    assert ev["layer"].tolist() == ["l0", "l1", "l2", "l3", "l4"]
    ref = normalise_events(pd.DataFrame.from_records(rows, columns=list(EVENT_COLUMNS)))
    ref = ref.sort_values("seq").reset_index(drop=True)
    pd.testing.assert_frame_equal(ev, ref, check_exact=True)
    odd = list(rows[0])
    odd[EVENT_COLUMNS.index("layer")] = 5  # a non-str value in a str column becomes its str
    got = events_from_values([tuple(odd)])
    assert got["layer"].tolist() == ["5"] and got["layer"].dtype == ref["layer"].dtype
    pd.testing.assert_frame_equal(events_from_values([]), normalise_events(
        pd.DataFrame({c: [] for c in EVENT_COLUMNS})), check_exact=True)
    with pytest.raises(ValueError, match="lacks columns"):
        tr.add_event({"seq": 9})
