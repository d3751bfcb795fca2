"""The one hook-kind table: every consumer reads the same kinds and help text."""

from __future__ import annotations

import pytest
from torch import nn

import hooklab
from hooklab.core import hooks
from hooklab.core.errors import HookKindError
from hooklab.recording import recorder


def test_table_is_the_one_source():
    assert hooks.HOOK_KINDS == ("forward_pre", "forward", "full_backward_pre", "full_backward",
                                "backward", "tensor", "post_accumulate_grad")
    assert recorder.HOOK_KINDS is hooks.HOOK_KINDS
    assert recorder.HOOK_KIND_HELP is hooks.HOOK_KIND_HELP
    for name, kind in hooks.HOOK_KIND_TABLE.items():
        assert kind.name == name and kind.phase in ("forward", "backward")
        assert hooks.HOOK_KIND_HELP[name] == f"{kind.api}: {kind.sees}"
        assert kind.api.split(" ")[0].split(".")[-1].startswith("register_")
    assert [k for k in hooks.HOOK_KINDS if hooks.phase_of(k) == "forward"] == ["forward_pre",
                                                                               "forward"]
    assert set(hooks.MODULE_BACKWARD_KINDS) < set(hooks.HOOK_KINDS)


def test_unknown_kind_is_named_with_the_known_ones():
    with pytest.raises(HookKindError, match="'bogus'.*known: forward_pre, forward"):
        hooks.check_kinds(["forward", "bogus"])
    with pytest.raises(HookKindError, match="bogus"):
        hooks.phase_of("bogus")
    with pytest.raises(HookKindError, match="known: forward_pre"):
        hooklab.record(nn.Sequential(nn.Linear(2, 2)), hooks={"0": ["bogus"]})
