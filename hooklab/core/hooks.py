"""The one table of PyTorch hook kinds: name, registering API, phase and what it sees.

The recorder attaches them by name, the dashboard lists them with this help text, charts
colour them; all read :data:`HOOK_KIND_TABLE`.

Example:
    >>> HOOK_KIND_TABLE["full_backward"].api
    'module.register_full_backward_hook'
    >>> [k for k in HOOK_KINDS if phase_of(k) == "forward"]
    ['forward_pre', 'forward']
"""

from __future__ import annotations

from dataclasses import dataclass

from hooklab.core.errors import HookKindError

__all__ = ["HookKind", "HOOK_KIND_TABLE", "HOOK_KINDS", "HOOK_KIND_HELP", "MODULE_BACKWARD_KINDS",
           "check_kinds", "phase_of"]


@dataclass(frozen=True)
class HookKind:
    """One PyTorch hook kind."""

    name: str   # the kind's name in hooklab (events' ``kind`` column, ``record(hooks=...)``)
    api: str    # the PyTorch call that registers it
    phase: str  # "forward" or "backward": when it fires
    sees: str   # what the hook receives, in one line

    @property
    def help(self) -> str:
        """``"<api>: <sees>"``, the text the dashboard shows."""
        return f"{self.api}: {self.sees}"


_KINDS = (
    HookKind("forward_pre", "module.register_forward_pre_hook", "forward",
             "sees (and may replace) the inputs"),
    HookKind("forward", "module.register_forward_hook", "forward",
             "sees inputs and output; may replace the output"),
    HookKind("full_backward_pre", "module.register_full_backward_pre_hook", "backward",
             "sees grad_output"),
    HookKind("full_backward", "module.register_full_backward_hook", "backward",
             "sees grad_input and grad_output"),
    HookKind("backward", "module.register_backward_hook (deprecated)", "backward",
             "grad of the module's LAST autograd node only, wrong for modules of several "
             "operations"),
    HookKind("tensor", "tensor.register_hook on the module output", "backward",
             "the gradient w.r.t. that output"),
    HookKind("post_accumulate_grad", "param.register_post_accumulate_grad_hook", "backward",
             "the accumulated .grad"),
)

#: Every hook kind, by name, in the order PyTorch fires them around one module.
HOOK_KIND_TABLE: dict[str, HookKind] = {k.name: k for k in _KINDS}
#: Every PyTorch hook kind the inspector can attach by name.
HOOK_KINDS: tuple[str, ...] = tuple(HOOK_KIND_TABLE)
#: One line of help per kind: ``{"forward": "module.register_forward_hook: sees ..."}``.
HOOK_KIND_HELP: dict[str, str] = {k.name: k.help for k in _KINDS}
#: The kinds registered on a module's backward (``full_backward_pre``, ``full_backward``,
#: ``backward``).
MODULE_BACKWARD_KINDS: tuple[str, ...] = ("full_backward_pre", "full_backward", "backward")


def phase_of(kind: str) -> str:
    """``"forward"`` or ``"backward"``: when hooks of ``kind`` fire.

    Raises:
        HookKindError: an unknown kind.
    """
    check_kinds([kind])
    return HOOK_KIND_TABLE[kind].phase


def check_kinds(kinds: list[str] | tuple[str, ...]) -> None:
    """Raise :class:`HookKindError` naming every unknown kind in ``kinds`` and the known ones."""
    bad = [k for k in kinds if k not in HOOK_KIND_TABLE]
    if bad:
        raise HookKindError(f"unknown hook kind(s) {bad}; known: {', '.join(HOOK_KINDS)}")
