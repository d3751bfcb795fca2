"""Both statistics paths (hooklab.core.stats) against a float64 numpy reference: the fused C
kernel of hooklab.core.native and the chunked torch reductions (every test runs on each, by the
``stats_path`` fixture).

Each case uses a small chunk so that one tensor spans many chunks, with zeros, NaN, Inf, -0.0
and sign patterns placed in some chunks only, so every branch of the per-chunk code (zero count
skipped for a chunk without 0 in its range, counted otherwise, NaN propagation) is exercised.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from hooklab.core import stats
from hooklab.core.stats import tensor_stats
from hooklab.core.trace import tensor_stats as trace_tensor_stats

pytestmark = pytest.mark.usefixtures("stats_path")


def reference(t: torch.Tensor) -> dict:
    x = t.detach()
    if x.is_complex():
        x = x.abs()
    a = x.double().numpy().ravel()
    fin = a[np.isfinite(a)]
    return dict(
        numel=a.size,
        mean=fin.mean() if fin.size else float("nan"),
        std=(fin.std(ddof=1) if fin.size > 1 else 0.0) if fin.size else float("nan"),
        min=fin.min() if fin.size else float("nan"),
        max=fin.max() if fin.size else float("nan"),
        zero_frac=float((a == 0).sum() / a.size),
        nan_count=int(np.isnan(a).sum()), inf_count=int(np.isinf(a).sum()),
        norm=float(np.sqrt((fin ** 2).sum())) if not np.isinf(a).any() else float("inf"),
    )


def check(t: torch.Tensor) -> dict:
    got = tensor_stats(t)
    ref = reference(t)
    for k in ("numel", "nan_count", "inf_count", "zero_frac"):
        assert got[k] == ref[k], k  # counts are exact
    for k in ("mean", "min", "max", "norm"):
        if np.isnan(ref[k]):
            assert np.isnan(got[k]), k
        else:
            assert got[k] == pytest.approx(ref[k], rel=1e-5, abs=1e-6 * (1 + abs(ref["max"]))), k
    if np.isnan(ref["std"]):
        assert np.isnan(got["std"])
    else:
        assert got["std"] == pytest.approx(ref["std"], rel=1e-3, abs=1e-6), "std"
    return got


@pytest.fixture
def small_chunk(monkeypatch):
    monkeypatch.setattr(stats, "STATS_CHUNK", 1000)
    return 1000


def test_trace_re_exports_the_one_function():
    assert trace_tensor_stats is tensor_stats


@pytest.mark.parametrize("seed", range(6))
def test_many_chunks_with_zeros_in_some_chunks_only(small_chunk, seed):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(small_chunk * 7 + 321, generator=g) * 3 + 0.25
    t[: small_chunk] = t[: small_chunk].abs() + 0.1  # a chunk without 0 in its range: skipped
    t[small_chunk: 2 * small_chunk] = -t[small_chunk: 2 * small_chunk].abs() - 0.1  # all < 0
    t[2 * small_chunk: 3 * small_chunk].relu_()  # half zeros, min exactly 0
    t[3 * small_chunk + 5] = -0.0  # a negative zero counts as a zero
    t[-3:] = 0  # zeros in the short last chunk
    got = check(t)
    assert got["zero_frac"] > 0


def test_relu_like_and_all_zero_chunks_count_exactly(small_chunk):
    t = torch.randn(small_chunk * 4, generator=torch.Generator().manual_seed(1)).relu()
    t[small_chunk: 2 * small_chunk] = 0
    got = check(t)
    assert got["zero_frac"] == float((t == 0).sum()) / t.numel()
    assert check(torch.zeros(small_chunk * 3))["zero_frac"] == 1.0


@pytest.mark.parametrize("where", [0, 2500, -1])
def test_nan_and_inf_in_one_chunk(small_chunk, where):
    t = torch.randn(small_chunk * 3 + 7, generator=torch.Generator().manual_seed(2))
    t[100: 400] = 0
    t[where] = float("nan")
    got = check(t)
    assert got["nan_count"] == 1
    t[where] = float("inf")
    t[where - 1 if where else 1] = -float("inf")
    got = check(t)
    assert got["inf_count"] == 2 and got["norm"] == float("inf")
    assert check(torch.full((small_chunk * 2 + 1,), float("nan")))["nan_count"] == small_chunk * 2 + 1


def test_default_chunk_size_large_tensor_exact_counts():
    n = stats.STATS_CHUNK * 3 + 17
    t = torch.randn(n, generator=torch.Generator().manual_seed(4)).relu_()
    t[7] = 1e30  # large but finite: float32 dot overflows only beyond ~1.8e19 per element
    got = check(t)
    assert got["zero_frac"] == float((t == 0).sum()) / n


def test_huge_finite_values_and_cancellation(small_chunk):
    t = torch.tensor([-3.8, 1.85e24, 3e38, -3e38] * 600)
    got = tensor_stats(t)
    assert got["inf_count"] == 0 and got["max"] == pytest.approx(3e38, rel=1e-6)
    assert got["norm"] == pytest.approx(float(t.double().norm()), rel=1e-6)
    t = torch.full((small_chunk * 5,), 1000.0) + torch.randn(small_chunk * 5) * 1e-2
    assert tensor_stats(t)["std"] == pytest.approx(float(t.double().std()), rel=1e-2)


def test_dtypes_layouts_and_edge_shapes(small_chunk):
    g = torch.Generator().manual_seed(5)
    base = torch.randn(40, 130, generator=g)
    base[::3] = 0
    check(base.t())  # non-contiguous
    check(base[:, ::2])
    check(base.half())
    check(base.bfloat16())
    check(base.double())
    check(torch.complex(base, base.flip(0)))
    check(torch.arange(-5, 3000, dtype=torch.int64))
    check(torch.tensor(0.0))
    check(torch.tensor([7.0]))
    empty = tensor_stats(torch.empty(0, 3))
    assert empty["numel"] == 0 and empty["zero_frac"] == 0.0


def test_threads_each_use_their_own_scratch(small_chunk):
    g = torch.Generator().manual_seed(6)
    tensors = [torch.randn(small_chunk * 6, generator=g).relu_() * (i + 1) for i in range(8)]
    expected = [tensor_stats(t) for t in tensors]
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = [tensor_stats(t) for t in tensors for _ in range(5)]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    for got in results.values():
        assert got == [e for e in expected for _ in range(5)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    t = torch.randn(5000, generator=torch.Generator().manual_seed(7)).relu_()
    t[3] = float("nan")
    cpu, gpu = tensor_stats(t), tensor_stats(t.cuda())
    for k in cpu:
        if np.isnan(cpu[k]):
            assert np.isnan(gpu[k])
        else:
            assert gpu[k] == pytest.approx(cpu[k], rel=1e-5), k


def _same(a: dict, b: dict) -> bool:
    return all((np.isnan(a[k]) and np.isnan(b[k])) or a[k] == b[k] for k in a) and a.keys() == b.keys()


@pytest.mark.parametrize("case", ["relu", "nan", "inf", "noncontig", "double", "half", "int",
                                  "scalar", "empty", "cancel"])
def test_stats_with_out_copy_equal_stats_without(small_chunk, case):
    g = torch.Generator().manual_seed(8)
    t = torch.randn(small_chunk * 3 + 11, generator=g)
    if case == "relu":
        t = t.relu()
    elif case == "nan":
        t[small_chunk + 3] = float("nan")
    elif case == "inf":
        t[5] = float("inf")
    elif case == "noncontig":
        t = torch.randn(70, 90, generator=g).t()[:, ::2]
    elif case == "double":
        t = t.double() * 1e-3
    elif case == "half":
        t = t.half()
    elif case == "int":
        t = torch.arange(-700, 2500)
    elif case == "scalar":
        t = torch.tensor(-2.5)
    elif case == "empty":
        t = torch.empty(0, 5)
    elif case == "cancel":
        t = torch.full((small_chunk * 2,), 1000.0) + torch.randn(small_chunk * 2, generator=g) * 1e-2
    out = torch.full(t.shape, 123.0)  # stale contents must be overwritten everywhere
    got = tensor_stats(t, out=out)
    assert _same(got, tensor_stats(t))
    assert torch.equal(out, t.to(torch.float32)) or (
        case == "nan" and torch.equal(out.nan_to_num(7.0), t.float().nan_to_num(7.0)))


def test_stats_out_must_fit():
    t = torch.randn(10)
    for bad in (torch.empty(9), torch.empty(10, dtype=torch.float64), torch.empty(20)[::2]):
        with pytest.raises(ValueError, match="out must be"):
            tensor_stats(t, out=bad)


def test_stats_many_equal_stats_of_each():
    """``tensor_stats_many`` (one kernel call for the contiguous float32 CPU tensors, the
    single-tensor path for the rest) gives every tensor exactly what ``tensor_stats`` gives."""
    g = torch.Generator().manual_seed(11)
    big = torch.randn(300_000, generator=g)
    big[::7] = 0.0
    ts = [torch.randn(5, generator=g), torch.zeros(0), torch.randn(3, 4, generator=g).t(),
          torch.tensor([1.0, float("nan"), float("inf")]), big,
          torch.full((50,), 1000.0) + torch.randn(50, generator=g) * 1e-3,  # cancellation
          torch.randn(4, generator=g, dtype=torch.float64), torch.ones(7),
          torch.randn(2, 3, generator=g).to_sparse()]
    many = stats.tensor_stats_many(ts)
    assert len(many) == len(ts)
    for t, got in zip(ts, many, strict=True):
        want = tensor_stats(t)
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == want[key] or (np.isnan(got[key]) and np.isnan(want[key])), key
        if t.numel() and t.layout == torch.strided:
            check(t)
    assert stats.tensor_stats_many([]) == []
