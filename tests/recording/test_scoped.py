"""HookScope: every hook it registered is gone when the block ends — normally, when the block
raises, and when a registration part-way through fails — and it is the only way library code
outside the recorder attaches a hook (the teaching code that shows PyTorch's own calls aside)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch import nn

from hooklab.recording.inventory import hooks_on
from hooklab.recording.scoped import HookScope

PKG = Path(__file__).resolve().parents[2] / "hooklab"
REGISTER = {"register_forward_hook", "register_forward_pre_hook", "register_hook",
            "register_full_backward_hook", "register_full_backward_pre_hook",
            "register_backward_hook", "register_module_forward_hook",
            "register_module_forward_pre_hook", "register_module_full_backward_hook"}
#: Code whose point is to show (or, for the hook doctor's demo, to leak) PyTorch's own calls,
#: and the fault injector's global hooks.
TEACHING = {"studies/lessons.py", "studies/hook_doctor.py", "studies/graphs.py",
            "testing/faults.py"}


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 2))


def test_hooks_fire_inside_and_are_gone_after():
    net = _net()
    seen: list[str] = []
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    with HookScope() as hooks:
        hooks.forward_pre(net[0], lambda m, i: seen.append("pre"))
        hooks.forward(net[1], lambda m, i, out: seen.append("fwd"))
        y = net(x)
        hooks.tensor(y, lambda g: seen.append("grad"))
        assert len(hooks) == 3 and len(hooks_on(net)) == 2
        y.sum().backward()
    assert seen == ["pre", "fwd", "grad"]
    assert hooks_on(net).empty
    y2 = net(x)
    y2.sum().backward()  # nothing fires any more
    assert seen == ["pre", "fwd", "grad"]


def test_gone_after_the_block_raises():
    net = _net()
    with pytest.raises(RuntimeError, match="boom"):
        with HookScope() as hooks:
            hooks.forward(net[0], lambda m, i, out: None)
            hooks.forward_pre(net[3], lambda m, i: None)
            raise RuntimeError("boom")
    assert hooks_on(net).empty


def test_gone_after_a_registration_fails_part_way():
    net = _net()
    with pytest.raises(AttributeError):
        with HookScope() as hooks:
            hooks.forward(net[0], lambda m, i, out: None)
            hooks.forward(object(), lambda m, i, out: None)  # type: ignore[arg-type]
    assert hooks_on(net).empty


def test_close_is_idempotent():
    net = _net()
    hooks = HookScope()
    hooks.forward(net[0], lambda m, i, out: None)
    hooks.close()
    hooks.close()
    assert len(hooks) == 0 and hooks_on(net).empty


def _register_calls(path: Path) -> list[int]:
    tree = ast.parse(path.read_text())
    return [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute) and n.func.attr in REGISTER]


def test_only_the_recorder_and_hookscope_register_hooks():
    offenders = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).as_posix()
        if rel.startswith("recording/") or rel in TEACHING or "/exercises/" in rel:
            continue
        offenders += [f"{rel}:{line}" for line in _register_calls(path)]
    assert offenders == [], f"register hooks through HookScope (hooklab.recording.scoped): {offenders}"


def test_the_guard_sees_a_direct_registration(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f(m):\n    return m.register_forward_hook(print)\n")
    assert _register_calls(bad) == [2]
