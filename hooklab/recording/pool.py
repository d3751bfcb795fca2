"""Reusable CPU float32 buffers for the tensors a recording stores.

Copying a tensor into a fresh allocation costs about five times a copy into memory that is
already mapped (each new page faults and is zeroed by the kernel: 0.37 s against 0.07 s for
957 MiB, issue 12). The recorder therefore copies stored tensors into buffers taken from
:data:`POOL`: a buffer whose tensors have all been dropped (the trace that held them is gone) is
handed out again for the next tensor of the same size, so a training loop or a dashboard that
records the same model again and again stops paying for page faults after its first recording.

A buffer is reused only when nothing references its memory any more (no tensor, view, slice or
NumPy array shares its storage: PyTorch's storage use count says so), so a stored tensor the
caller still holds is never overwritten. Each buffer is exactly the size of the tensor stored in
it. Released buffers are kept up to :attr:`BufferPool.limit` bytes (default 1 GiB); beyond it
the oldest are dropped, and :meth:`BufferPool.clear` drops them all.

Example:
    >>> buf = POOL.take((2, 3))
    >>> buf.copy_(x)
"""

from __future__ import annotations

import math
import threading
import weakref
from collections import OrderedDict

import torch

__all__ = ["POOL", "BufferPool"]


def _use_count(t: torch.Tensor) -> int:
    """Strong references to ``t``'s storage (tensors, views, storage objects)."""
    return int(torch._C._storage_Use_Count(t.untyped_storage()._cdata))


class BufferPool:
    """Flat float32 CPU buffers by element count, reused once nothing references them.

    Args:
        limit: bytes of released buffers kept for reuse; beyond it the least recently released
            are dropped (checked whenever a handed-out tensor is garbage-collected). Buffers in
            use are the traces' own memory and never count.
    """

    def __init__(self, limit: int = 2**30) -> None:
        self.limit = int(limit)
        self._lock = threading.RLock()  # finalizers may run inside take() (garbage collection)
        # id -> (buffer, its storage use count when nothing else refers to it)
        self._buffers: dict[int, tuple[torch.Tensor, int]] = {}
        self._by_numel: dict[int, list[int]] = {}
        self._released: OrderedDict[int, int] = OrderedDict()  # id -> bytes, oldest first
        self._released_bytes = 0
        self.reused = 0  # buffers handed out again (for tests and benchmarks)

    def take(self, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
        """A contiguous float32 CPU tensor of ``shape`` (contents undefined) in a free buffer
        of that many elements if there is one, else in a new one. The returned tensor, and
        every view of it, keeps the buffer in use."""
        numel = math.prod(shape)
        if numel <= 0:
            return torch.empty(shape, dtype=torch.float32)
        with self._lock:
            for bid in self._by_numel.get(numel, ()):
                buf, idle = self._buffers[bid]
                if _use_count(buf) == idle:  # the one check that allows reuse
                    self._unrelease(bid)
                    self.reused += 1
                    return self._hand_out(bid, buf, shape)
            buf = torch.empty(numel, dtype=torch.float32)
            bid = id(buf)
            self._buffers[bid] = (buf, _use_count(buf))
            self._by_numel.setdefault(numel, []).append(bid)
            return self._hand_out(bid, buf, shape)

    def _hand_out(self, bid: int, buf: torch.Tensor, shape: torch.Size | tuple[int, ...]
                  ) -> torch.Tensor:
        out = buf.view(shape)  # a new tensor object: its life is the caller's
        weakref.finalize(out, self._release, bid)
        return out

    def _unrelease(self, bid: int) -> None:
        n = self._released.pop(bid, None)
        if n is not None:
            self._released_bytes -= n

    def _release(self, bid: int) -> None:
        """A handed-out tensor was collected: note its buffer, drop the oldest beyond the limit.

        Dropping a buffer that is in fact still referenced (a slice outlived the tensor) is
        harmless: the pool forgets it and its memory goes when the slice goes."""
        with self._lock:
            entry = self._buffers.get(bid)
            if entry is None or bid in self._released:
                return
            self._released[bid] = entry[0].numel() * 4
            self._released_bytes += entry[0].numel() * 4
            while self._released_bytes > self.limit and self._released:
                old, _ = next(iter(self._released.items()))
                self._unrelease(old)
                self._drop(old)

    def _drop(self, bid: int) -> None:
        buf, _ = self._buffers.pop(bid)
        ids = self._by_numel[buf.numel()]
        ids.remove(bid)
        if not ids:
            del self._by_numel[buf.numel()]

    def free_bytes(self) -> int:
        """Bytes of pooled buffers nothing references at the moment."""
        with self._lock:
            return sum(b.numel() * 4 for b, idle in self._buffers.values()
                       if _use_count(b) == idle)

    def clear(self) -> None:
        """Drop every free buffer (buffers still in use stay with their tensors)."""
        with self._lock:
            for bid, (buf, idle) in list(self._buffers.items()):
                if _use_count(buf) == idle:
                    self._unrelease(bid)
                    self._drop(bid)


#: The pool the recorder copies stored tensors into.
POOL = BufferPool()
