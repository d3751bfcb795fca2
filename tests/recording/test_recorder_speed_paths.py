"""The recorder's speed paths: stored copies in reused buffers (hooklab.recording.pool).

A reused buffer must never be one whose memory someone still references, stored values must be
exact copies, and recording again after dropping a trace must reuse the buffers.
"""

from __future__ import annotations

import gc

import torch
from torch import nn

import hooklab
from hooklab.recording.pool import POOL, BufferPool
from hooklab.recording.recorder import stored_copy


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 5))


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())


def test_buffer_is_reused_only_when_nothing_references_it():
    pool = BufferPool()
    a = pool.take((2, 5))
    a.fill_(1.0)
    ptr = a.data_ptr()
    keep = a[1]  # a view outlives the tensor
    del a
    gc.collect()
    b = pool.take((10,))
    assert b.data_ptr() != ptr and torch.equal(keep, torch.ones(5))
    arr = keep.numpy()  # a NumPy array shares the memory
    del keep
    gc.collect()
    c = pool.take((5, 2))
    assert c.data_ptr() != ptr and (arr == 1).all()
    del arr
    gc.collect()
    d = pool.take((1, 10))
    assert d.data_ptr() == ptr and d.shape == (1, 10) and pool.reused == 1
    assert pool.take((0, 3)).shape == (0, 3)


def test_released_buffers_beyond_the_limit_are_dropped():
    pool = BufferPool(limit=100)
    ts = [pool.take((10,)) for _ in range(4)]  # 40 bytes each
    del ts
    gc.collect()
    assert pool.free_bytes() == 80  # the oldest two of 160 bytes went
    pool.clear()
    assert pool.free_bytes() == 0 and pool.take((10,)) is not None and pool.reused == 0


def test_stored_copy_is_exact_for_dtypes_and_layouts():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 7, generator=g)
    for src in (x, x.t(), x[:, ::2], x.double(), x.half(), x.to(torch.bfloat16),
                torch.arange(12).reshape(3, 4), x.to_sparse(), torch.tensor(3.5)):
        got = stored_copy(src)
        want = src.detach().to("cpu", torch.float32, copy=True)
        assert got.dtype == torch.float32 and not got.requires_grad
        if src.layout != torch.strided:  # the plain converting copy, as before
            assert got.layout == src.layout and torch.equal(got.to_dense(), want.to_dense())
            continue
        assert got.is_contiguous() and torch.equal(got, want)
        assert got.data_ptr() != src.data_ptr()


def test_recording_again_reuses_buffers_and_values_stay_exact():
    model = _model()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    before = _hooks(model)

    def once() -> hooklab.Trace:
        with hooklab.record(model, max_bytes=None) as rec:
            rec.run(x)
        return rec.trace

    first = once()
    firsts = {k: first.tensor(k).clone() for k in first.tensor_keys()}
    ptrs = {first.tensor(k).data_ptr() for k in first.tensor_keys()}
    second = once()  # the first trace is alive: nothing of it may be reused
    assert not ptrs & {second.tensor(k).data_ptr() for k in second.tensor_keys()}
    for k in first.tensor_keys():
        assert torch.equal(first.tensor(k), firsts[k])
    del first
    gc.collect()
    reused = POOL.reused
    third = once()
    assert POOL.reused > reused
    assert ptrs & {third.tensor(k).data_ptr() for k in third.tensor_keys()}
    for k in third.tensor_keys():
        assert torch.equal(third.tensor(k), second.tensor(k))
    # the stored gradient equals autograd's on the same graph
    out = model(x)
    y = out.detach().argmax(1)
    g, = torch.autograd.grad(out.gather(1, y.view(-1, 1)).sum(), [out])
    row = third.select(layer="3", role="grad_output").iloc[0]
    assert torch.equal(third.tensor(row["key"]), g)
    assert _hooks(model) == before
