"""Tensor summary statistics (the ``mean`` ... ``inf_count`` columns of an event).

:func:`tensor_stats` is on the hot path of every recording: each hook firing summarises the
tensor it saw. On the CPU a float32 tensor is summarised in one pass by the fused C kernel of
:mod:`hooklab.core.native` (sum, sum of squares, min, max and nonzero count together; two to
five times faster than the torch reductions). Where that kernel is not built (no compiler, or
``HOOKLAB_NATIVE=0``), a large tensor is still read from memory once: it is reduced in chunks
of :data:`STATS_CHUNK` elements (4 MiB of float32), and all reductions of a chunk run while it
is in the cache. (Smaller chunks fit a core's L2 but cost more: every reduction is an OpenMP
parallel region, and on a loaded 2-core machine each region waits for a descheduled thread;
4 MiB measured fastest and steadiest on ResNet-18's tensors.) Per chunk: ``aminmax`` (min and
max in one pass), ``sum``, a BLAS ``dot`` (sum of squares) and, only when the chunk's range
contains 0, the zero count as the sum of ``x != 0`` written into a reused float32 scratch
buffer (ten times faster than ``torch.count_nonzero``, which is not vectorised on the CPU).
Chunk results are float32; they are added up in float64.

Example:
    >>> tensor_stats(torch.tensor([0.0, 3.0, 4.0]))["norm"]
    5.0
"""

from __future__ import annotations

import math
import threading

import torch

from hooklab.core.native import Kernels, accepts, kernels

__all__ = ["STATS_CHUNK", "moments_stats", "tensor_stats", "tensor_stats_many"]

#: Elements per chunk on the CPU (4 MiB of float32): the reductions of a chunk read it from cache.
STATS_CHUNK = 1 << 20

_scratch = threading.local()  # one scratch buffer per thread: recorders run on several threads


def _scratch_buffer(n: int) -> torch.Tensor:
    """A float32 CPU buffer of ``n`` elements, reused by this thread."""
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.numel() < n:
        buf = _scratch.buf = torch.empty(max(n, STATS_CHUNK), dtype=torch.float32)
    return buf[:n]


def _device_moments(x: torch.Tensor) -> list[float]:
    """[sum, sum of squares, min, max, nonzero count] on an accelerator: one sync."""
    lo, hi = torch.aminmax(x)
    return torch.stack([x.sum(), torch.dot(x, x), lo, hi,
                        torch.count_nonzero(x).to(x.dtype)]).tolist()


def _cpu_moments(x: torch.Tensor, out: torch.Tensor | None = None) -> list[float]:
    """[sum, sum of squares, min, max, nonzero count] of a flat CPU tensor (float32, or any real
    dtype when ``out``, a flat float32 tensor of the same size, receives its float32 copy chunk
    by chunk: each chunk is then summarised from the copy while the copy is in the cache).
    A float32 tensor is read once by the fused C kernel where it is built (:mod:`.native`)."""
    k = kernels()
    if k is not None:
        if accepts(x):
            return k.moments(x, out)
        if out is not None:  # summarise the float32 copy, as tensor_stats without out does
            return k.moments(out.copy_(x))
    n = x.numel()
    chunks = x.split(STATS_CHUNK) if n > STATS_CHUNK else (x,)
    dests = (out.split(STATS_CHUNK) if n > STATS_CHUNK else (out,)) if out is not None else None
    sums: list[torch.Tensor] = []
    lo_v, hi_v = math.inf, -math.inf
    nonzero = 0.0
    for i, c in enumerate(chunks):
        if dests is not None:
            c = dests[i].copy_(c)
        c_lo, c_hi = (float(v) for v in torch.aminmax(c))
        sums.append(torch.stack([c.sum(), torch.dot(c, c)]))
        # a NaN makes the sum NaN, so tensor_stats recounts over the finite values anyway
        lo_v, hi_v = min(lo_v, c_lo), max(hi_v, c_hi)
        if c_lo > 0 or c_hi < 0:  # no zero in this chunk (False for NaN: then count)
            nonzero += c.numel()
        else:
            buf = _scratch_buffer(c.numel())
            torch.ne(c, 0, out=buf)  # 1.0 where nonzero (NaN too), exact integer sum per chunk
            nonzero += float(buf.sum())
    if len(sums) == 1:
        total, sumsq = sums[0].tolist()
    else:
        parts = torch.stack(sums).double().sum(0)
        total, sumsq = float(parts[0]), float(parts[1])
    return [total, sumsq, lo_v, hi_v, nonzero]


def _kernels_for(t: torch.Tensor) -> Kernels | None:
    """The fused kernels when they are built and read ``t`` as it is (a non-empty contiguous
    float32 CPU tensor)."""
    return kernels() if t.numel() and accepts(t) else None


def _moments(x: torch.Tensor) -> list[float]:
    """[sum, sum of squares, min, max, nonzero count] of a flat float32 tensor."""
    if x.device.type != "cpu":
        return _device_moments(x)
    return _cpu_moments(x)


def tensor_stats(t: torch.Tensor, *, out: torch.Tensor | None = None
                 ) -> dict[str, float | int]:
    """Summary statistics of a tensor, computed in float32 (chunk sums added in float64).

    Returns mean, std (unbiased; 0 for one element), min, max, L2 norm, the fraction of exact
    zeros and the NaN and Inf counts. NaN/Inf are counted only when the min/max show that some
    are present. Statistics of non-finite tensors are taken over the finite values. Complex
    tensors are summarised by their magnitudes; other dtypes as float32; sparse tensors as
    their dense equivalent (implicit zeros included).

    ``out``: a contiguous float32 CPU tensor with as many elements as ``t``, filled with
    ``t.to(torch.float32)`` (the recorder's stored copy). For a real CPU tensor the copy is
    made chunk by chunk and each chunk summarised from the copy while it is in the cache, so
    ``t`` is read from memory once for both; the statistics are the same as without ``out``.
    """
    n = t.numel()
    if out is not None and (out.numel() != n or out.dtype != torch.float32
                            or out.device.type != "cpu" or not out.is_contiguous()):
        raise ValueError("out must be a contiguous float32 CPU tensor with t's element count")
    if n == 0:
        nan = float("nan")
        return dict(numel=0, mean=nan, std=nan, min=nan, max=nan, norm=0.0, zero_frac=0.0,
                    nan_count=0, inf_count=0)
    if out is None:
        k = _kernels_for(t)
        if k is not None:  # the hot path: no view made, the kernel reads t as it is
            return _finish(t, n, *k.moments(t))
    x = t.detach()
    if out is not None and x.device.type == "cpu" and x.layout == torch.strided \
            and not x.is_complex():
        x = out.view(-1)
        total_v, sumsq_v, lo_v, hi_v, nz = _cpu_moments(t.detach().reshape(-1), out=x)
    else:
        if x.layout != torch.strided:  # a sparse gradient (nn.Embedding(sparse=True))
            x = x.to_dense()
        if out is not None:
            out.copy_(x)
        if x.is_complex():
            x = x.abs()
        if x.dtype != torch.float32:
            x = x.float()
        x = x.reshape(-1)
        total_v, sumsq_v, lo_v, hi_v, nz = _moments(x)
    return _finish(x, n, total_v, sumsq_v, lo_v, hi_v, nz)


def _finish(x: torch.Tensor, n: int, total_v: float, sumsq_v: float, lo_v: float, hi_v: float,
            nz: float) -> dict[str, float | int]:
    """The statistics of the float32 ``x`` (``n`` elements, any shape) from its moments; ``x``
    is read again only for a cancelling variance or non-finite values."""
    mean_v, var_v = _mean_var(n, total_v, sumsq_v)
    if _cancels(n, mean_v, var_v):
        # sum-of-squares cancels when |mean| >> std: use the exact two-pass variance
        var_v = float(torch.var(x.detach().double(), correction=1))
    nan_count = inf_count = 0
    if not _finite(lo_v, hi_v, mean_v, var_v):
        x = x.detach().reshape(-1)
        nan_mask = torch.isnan(x)
        inf_mask = torch.isinf(x)
        nan_count, inf_count = int(nan_mask.sum()), int(inf_mask.sum())
        finite = x[~(nan_mask | inf_mask)].double()  # float64: no overflow, no recursion
        m = finite.numel()
        if m:
            mean_v = float(finite.mean())
            var_v = float(finite.var(correction=1)) if m > 1 else 0.0
            lo_v, hi_v = float(finite.min()), float(finite.max())
            sumsq_v = float(torch.dot(finite, finite))
        else:
            mean_v = var_v = lo_v = hi_v = float("nan")
            sumsq_v = 0.0
        nz = int(torch.count_nonzero(x))
    return _stats(n, mean_v, var_v, lo_v, hi_v, sumsq_v, nz, nan_count, inf_count)


def _mean_var(n: int, total_v: float, sumsq_v: float) -> tuple[float, float]:
    """Mean and unbiased variance from the sum and the sum of squares (one pass)."""
    mean_v = total_v / n
    return mean_v, max(sumsq_v - n * mean_v * mean_v, 0.0) / (n - 1) if n > 1 else 0.0


def _cancels(n: int, mean_v: float, var_v: float) -> bool:
    """Whether the one-pass variance cancels (|mean| >> std): it is then taken in two passes
    (``hl_moments_check`` tests a little more widely, at 2e-3)."""
    return n > 1 and math.isfinite(var_v) and var_v < 1e-3 * mean_v * mean_v


def _finite(lo_v: float, hi_v: float, mean_v: float, var_v: float) -> bool:
    return (math.isfinite(lo_v) and math.isfinite(hi_v) and math.isfinite(mean_v)
            and math.isfinite(var_v))


def _stats(n: int, mean_v: float, var_v: float, lo_v: float, hi_v: float, sumsq_v: float,
           nz: float, nan_count: int, inf_count: int) -> dict[str, float | int]:
    sumsq = float("inf") if inf_count else sumsq_v
    return dict(
        numel=n,
        mean=float(mean_v),
        std=float(math.sqrt(max(var_v, 0.0))) if math.isfinite(var_v) else float("nan"),
        min=float(lo_v),
        max=float(hi_v),
        norm=float(math.sqrt(max(sumsq, 0.0))) if not math.isnan(sumsq) else float("nan"),
        zero_frac=float((n - round(nz)) / n),
        nan_count=int(nan_count),
        inf_count=int(inf_count),
    )


def moments_stats(n: int, total_v: float, sumsq_v: float, lo_v: float, hi_v: float,
                  nz: float) -> dict[str, float | int]:
    """:func:`tensor_stats` of a float32 tensor of ``n`` elements from the moments the fused
    kernel gave for it (:meth:`~hooklab.core.native.Kernels.moments_into`), without the
    tensor: only for moments that kernel passed as needing no second read. Raises
    ``ValueError`` otherwise (non-finite moments or a cancelling variance)."""
    mean_v, var_v = _mean_var(n, total_v, sumsq_v)
    if not _finite(lo_v, hi_v, mean_v, var_v) or _cancels(n, mean_v, var_v):
        raise ValueError("these moments need the tensor read again (tensor_stats does)")
    return _stats(n, mean_v, var_v, lo_v, hi_v, sumsq_v, nz, 0, 0)


def tensor_stats_many(ts: list[torch.Tensor]) -> list[dict[str, float | int]]:
    """:func:`tensor_stats` of each tensor (the same values), the contiguous float32 CPU ones
    summarised by one call of the fused kernel: what a batch of parameter gradients costs
    once per backward pass instead of once per parameter."""
    fast = [i for i, t in enumerate(ts) if _kernels_for(t) is not None]
    out: list[dict[str, float | int] | None] = [None] * len(ts)
    if fast:
        k = kernels()
        assert k is not None
        xs = [ts[i] for i in fast]  # read as they are, like tensor_stats' hot path
        for i, x, m in zip(fast, xs, k.moments_many(xs), strict=True):
            out[i] = _finish(x, x.numel(), *m)
    return [tensor_stats(t) if o is None else o for t, o in zip(ts, out, strict=True)]
