"""Shared test fixtures and the hook-leak check every hook test uses."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def hook_counts(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """Every hook dictionary of every module and parameter, as counts (for before/after checks)."""
    out: dict[str, tuple[int, ...]] = {}
    for name, m in model.named_modules():
        out[name] = (
            len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
            len(m._backward_pre_hooks), len(getattr(m, "_forward_hooks_with_kwargs", {})),
            len(getattr(m, "_state_dict_hooks", {})),
        )
    for name, p in model.named_parameters():
        hooks = p._backward_hooks or {}
        post = getattr(p, "_post_accumulate_grad_hooks", None) or {}
        out["param:" + name] = (len(hooks), len(post))
    return out


def total_hooks(model: torch.nn.Module) -> int:
    return sum(sum(v) for k, v in hook_counts(model).items())


@pytest.fixture
def no_leak():
    """Use as ``with no_leak(model): ...`` to assert the model's hooks are unchanged afterwards."""
    from contextlib import contextmanager

    @contextmanager
    def check(model: torch.nn.Module):
        before = hook_counts(model)
        flags = [(p.requires_grad) for p in model.parameters()]
        training = [m.training for m in model.modules()]
        try:
            yield
        finally:
            assert hook_counts(model) == before, "a hook was left behind"
            assert [p.requires_grad for p in model.parameters()] == flags
            assert [m.training for m in model.modules()] == training

    return check


@pytest.fixture(params=["native", "torch"])
def stats_path(request, monkeypatch):
    """Run a test on both statistics paths: the fused C kernels of ``hooklab.core.native`` and
    the torch reductions (``HOOKLAB_NATIVE=0``). The native run fails where a C compiler is on
    PATH but the kernels do not build; it is skipped only on a machine without a compiler."""
    import shutil

    from hooklab.core import native

    monkeypatch.setenv(native.ENABLE_ENV, "1" if request.param == "native" else "0")
    native.reset()
    if request.param == "native":
        if not any(shutil.which(c) for c in (os.environ.get("CC") or "cc", "gcc", "clang")):
            pytest.skip("no C compiler on PATH: the native statistics kernels cannot be built")
        assert native.kernels() is not None, native.native_status()
    else:
        assert native.kernels() is None
    yield request.param
    native.reset()
