"""The fused C kernels of hooklab.core.native against torch in float64, and their build: the
cache, the fallback when no compiler works, and ``HOOKLAB_NATIVE=0``."""

from __future__ import annotations

import ctypes
import os

import numpy as np
import pytest
import torch

from hooklab.core import native
from hooklab.core.stats import moments_stats, tensor_stats
from hooklab.recording.watch import _alive_units


@pytest.fixture
def k(monkeypatch):
    monkeypatch.setenv(native.ENABLE_ENV, "1")
    native.reset()
    if native._compiler() is None:
        pytest.skip("no C compiler on PATH: the kernels cannot be built")
    got = native.kernels()
    assert got is not None, native.native_status()
    yield got
    native.reset()


def _ref_moments(x: torch.Tensor) -> list[float]:
    d = x.double()
    return [float(d.sum()), float((d * d).sum()), float(d.min()), float(d.max()),
            float((x != 0).sum())]


@pytest.mark.parametrize("n", [1, 7, 2047, 2048, 2049, 100_003, 3 * 2048 * 97])
def test_moments_equal_float64_and_copy_into_dst(k, n):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, generator=g) * 3 - 0.5
    x[::5] = 0.0
    x[1::11].relu_()
    ref = _ref_moments(x)
    got = k.moments(x)
    assert got[2:] == ref[2:]  # min, max and the nonzero count are exact
    assert got[0] == pytest.approx(ref[0], rel=1e-5, abs=1e-3)
    assert got[1] == pytest.approx(ref[1], rel=1e-6)
    dst = torch.full((n,), 7.0)
    assert k.moments(x, dst) == got
    assert torch.equal(dst, x)


@pytest.mark.parametrize("shape", [(4, 6, 5, 5), (3, 9), (2, 3, 4, 5, 6), (1, 1, 1), (5, 0, 3)])
def test_alive_units_equal_torch_and_accumulate(k, shape):
    g = torch.Generator().manual_seed(len(shape))
    x = torch.randn(*shape, generator=g).relu()
    if shape[1] > 2:
        x[:, 1] = 0.0  # a dead unit
        x[:, 2] = 0.0
        x[-1, 2].view(-1)[-1] = 5.0  # alive only by the last element of the last sample
    if shape[1] > 3:
        x[:, 3] = float("nan")  # NaN counts as non-zero
    dims = [0, *range(2, x.dim())]
    expect = ((x != 0).sum(dim=dims) > 0) if x.numel() else torch.zeros(shape[1], dtype=torch.bool)
    alive = torch.zeros(shape[1], dtype=torch.uint8)
    k.alive_units(x, alive)
    assert alive.bool().tolist() == expect.tolist()
    if shape[1] > 2:  # an OR over calls: a unit dead in this call stays alive from the last
        again = alive.clone()
        k.alive_units(torch.zeros_like(x), again)
        assert torch.equal(again, alive)


def test_alive_units_torch_fallback_for_other_layouts(stats_path):
    x = torch.randn(4, 6, 5, 5).relu()
    x[:, 2] = 0
    cl = x.to(memory_format=torch.channels_last)  # not contiguous: the torch path
    a, b = torch.zeros(6, dtype=torch.uint8), torch.zeros(6, dtype=torch.uint8)
    _alive_units(x, a)
    _alive_units(cl, b)
    _alive_units(x.double(), b)
    assert a.tolist() == b.tolist() == [1, 1, 0, 1, 1, 1]


@pytest.mark.parametrize("n", [(1 << 18) - 1, 1 << 18, 3_211_264 + 5])
def test_large_arrays_give_the_same_result_on_any_thread_count(k, n):
    """Large arrays are cut into fixed parts: one thread and two give identical bits."""
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, generator=g).relu_() * 1e3
    before = torch.randn(n, generator=g)
    threads = torch.get_num_threads()
    got = {}
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            b = before.clone()
            got[t] = (k.moments(x), k.diff_copy(b, x))
            assert torch.equal(b, x)
    finally:
        torch.set_num_threads(threads)
    assert got[1] == got[2]
    ref = _ref_moments(x)
    assert got[1][0][2:] == ref[2:]
    assert got[1][0][0] == pytest.approx(ref[0], rel=1e-6)
    assert got[1][1][0] == pytest.approx(float(((before.double() - x.double()) ** 2).sum()),
                                         rel=1e-6)
    assert got[1][1][1] == pytest.approx(ref[1], rel=1e-6)


def test_copy_and_difference_sums_of_squares(k):
    g = torch.Generator().manual_seed(3)
    a = torch.randn(50_001, generator=g)
    b = a + torch.randn(50_001, generator=g) * 1e-3
    dst = torch.empty_like(a)
    assert k.copy_sumsq(a, dst) == pytest.approx(float((a.double() ** 2).sum()), rel=1e-6)
    assert torch.equal(dst, a)
    before = a.clone()
    d2, w2 = k.diff_copy(before, b)
    assert d2 == pytest.approx(float(((a.double() - b.double()) ** 2).sum()), rel=1e-4)
    assert w2 == pytest.approx(float((b.double() ** 2).sum()), rel=1e-6)
    assert torch.equal(before, b)
    assert k.diff_copy(before, b)[0] == 0.0  # the buffer now holds b: no difference left


def test_build_is_cached_per_source_and_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path))
    monkeypatch.setenv(native.ENABLE_ENV, "1")
    native.reset()
    try:
        if native._compiler() is None:
            pytest.skip("no C compiler on PATH")
        first = native.kernels()
        assert first is not None and first.path.parent == tmp_path
        stamp = first.path.stat().st_mtime_ns
        native.reset()
        again = native.kernels()
        assert again is not None and again.path == first.path
        assert first.path.stat().st_mtime_ns == stamp  # loaded, not rebuilt
        assert [p.name for p in tmp_path.iterdir()] == [first.path.name]  # no temp left
        assert str(tmp_path) in native.native_status()
    finally:
        native.reset()


def test_a_failing_compiler_falls_back_to_torch_with_the_same_stats(tmp_path, monkeypatch):
    x = torch.randn(10_000, generator=torch.Generator().manual_seed(9)).relu_()
    monkeypatch.setenv(native.ENABLE_ENV, "0")
    native.reset()
    expect = tensor_stats(x)
    assert "HOOKLAB_NATIVE=0" in native.native_status()
    fake = tmp_path / "bin"
    fake.mkdir()
    cc = fake / "brokencc"
    cc.write_text("#!/bin/sh\necho 'brokencc: cannot compile' >&2\nexit 1\n")
    cc.chmod(0o755)
    monkeypatch.setenv("CC", str(cc))
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(native.ENABLE_ENV, "1")
    native.reset()
    try:
        assert native.kernels() is None
        status = native.native_status()
        assert "build failed" in status and "cannot compile" in status
        got = tensor_stats(x)
        assert got.keys() == expect.keys()
        for key in got:
            assert got[key] == pytest.approx(expect[key], rel=1e-6), key
        assert not [p for p in (tmp_path / "cache").iterdir()]  # no half-built library left
    finally:
        native.reset()
    assert os.environ.get("CC") == str(cc)  # (monkeypatch restores it after the test)


def test_accepts_only_contiguous_float32_cpu_tensors():
    x = torch.zeros(4, 6)
    assert native.accepts(x)
    assert not native.accepts(x.t())  # a transposed view is not contiguous
    assert not native.accepts(x.double())
    assert not native.accepts(x.half())
    assert not native.accepts(torch.zeros(3, device="meta"))
    assert not native.accepts(x.to_sparse())  # no is_contiguous to ask: not an error either


def test_moments_many_equal_moments_of_each_on_any_thread_count(k):
    """One call for many arrays (a backward pass's parameter gradients) gives each array the
    bits ``moments`` gives it alone: small ones spread over threads, large ones split."""
    g = torch.Generator().manual_seed(3)
    xs = [torch.randn(n, generator=g) * (i + 1) for i, n in
          enumerate([1, 64, 2047, 9408, (1 << 18) - 1, 1 << 18, 2_359_296, 5])]
    xs[2][::3] = 0.0
    xs[4][7] = float("nan")
    threads = torch.get_num_threads()
    try:
        got = {}
        for t in (1, 2):
            torch.set_num_threads(t)
            got[t] = k.moments_many(xs)
    finally:
        torch.set_num_threads(threads)
    alone = [k.moments(x) for x in xs]
    for t in (1, 2):
        assert len(got[t]) == len(xs)
        for a, b in zip(got[t], alone, strict=True):
            assert a == b or (np.isnan(a[0]) and np.isnan(b[0]) and a[2:] == b[2:])
    assert k.moments_many([]) == []
    for x, m in zip(xs, alone, strict=True):
        if not torch.isnan(x).any():
            ref = _ref_moments(x)
            assert m[2:] == ref[2:]
            assert m[1] == pytest.approx(ref[1], rel=1e-6)


def _python_rereads(n: int, m: list[float]) -> bool:
    """Whether hooklab.core.stats' finish reads the tensor again for these moments."""
    try:
        moments_stats(n, *m)
    except ValueError:
        return True
    return False


def test_moments_into_flags_every_tensor_the_python_finish_reads_again(k):
    """``moments_into`` writes the bits ``moments`` gives and says whether the statistics need
    the tensor again: for every tensor the Python finish would read again (non-finite values,
    a variance that cancels), on tensors swept across the cancellation threshold."""
    g = torch.Generator().manual_seed(11)
    cases = [torch.randn(n, generator=g) for n in (1, 2, 5, 4096, 300_001)]
    base = torch.randn(20_000, generator=g)
    # std/|mean| from 0.01 to 0.1: var/mean^2 crosses the 1e-3 threshold (at 0.0316...)
    cases += [base * s + 1.0 for s in np.geomspace(0.01, 0.1, 41)]
    cases += [torch.full((9,), 3.0), torch.zeros(4)]
    for bad in (float("nan"), float("inf"), float("-inf")):
        t = torch.randn(1000, generator=g)
        t[17] = bad
        cases.append(t)
    flagged = python = 0
    for x in cases:
        out = (ctypes.c_double * 5)()
        reread = k.moments_into(x, out)
        m = list(out)
        assert m == k.moments(x) or (np.isnan(m[0]) and m[2:] == k.moments(x)[2:])
        wanted = _python_rereads(x.numel(), m)
        assert reread or not wanted, (x.numel(), m)  # never a missed second read
        flagged += reread
        python += wanted
        if not reread:
            assert moments_stats(x.numel(), *m) == tensor_stats(x)
    assert python >= 20 and flagged >= python  # the sweep reaches both sides of the threshold
    assert flagged - python <= 8  # the kernel's wider test sends few extra tensors down it


def test_diff_copy_many_equals_diff_copy_of_each_on_any_thread_count(k):
    g = torch.Generator().manual_seed(4)
    sizes = [1, 63, 2048, 9408, (1 << 18) - 1, 1 << 18, 2_359_296]
    nows = [torch.randn(n, generator=g) for n in sizes]
    befores = [p + torch.randn(p.shape, generator=g) * 1e-3 for p in nows]
    alone = []
    for b, p in zip(befores, nows, strict=True):
        alone.append(k.diff_copy(b.clone(), p))
    threads = torch.get_num_threads()
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            bufs = [b.clone() for b in befores]
            assert k.diff_copy_many(bufs, nows) == alone
            assert all(torch.equal(b, p) for b, p in zip(bufs, nows, strict=True))
    finally:
        torch.set_num_threads(threads)
    assert k.diff_copy_many([], []) == []
    for (d2, w2), b, p in zip(alone, befores, nows, strict=True):
        assert d2 == pytest.approx(float(((b.double() - p.double()) ** 2).sum()), rel=1e-4)
        assert w2 == pytest.approx(float((p.double() ** 2).sum()), rel=1e-6)
