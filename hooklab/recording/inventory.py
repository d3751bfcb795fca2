"""The hook inventory ("hook doctor"): every hook currently registered on a model.

:func:`hooks_on` reads PyTorch's own hook dictionaries, so it finds hooks whoever registered
them (hooklab, a library, the user's notebook): on each module ``_forward_pre_hooks``,
``_forward_hooks``, ``_backward_pre_hooks``, ``_backward_hooks`` (full or the deprecated kind,
told apart by ``_is_full_backward_hook``), the four state-dict hook dictionaries; on each
parameter its tensor hooks (``_backward_hooks``) and post-accumulate-grad hooks; and the
global module hooks of ``torch.nn.modules.module``.

"Looks leaked" — the heuristic, stated honestly:
    A hook looks leaked when **no** :class:`torch.utils.hooks.RemovableHandle` for it is alive
    anywhere in the process (found with one :func:`gc.get_objects` scan). ``register_*`` returns
    the only object that can remove a hook; code that dropped it (the seed's ``GradCAM``
    registers two hooks in ``register_hooks`` and discards both handles) can never remove the
    hook again, and the hook keeps firing on every later forward and backward. Hooks defined in
    PyTorch itself are never flagged. The heuristic can be wrong both ways: code may keep a
    handle it will never call (not flagged), or remove hooks by clearing the dictionary
    (flagged, though harmless). The row's ``reason`` says which facts led to the verdict,
    including whether the hook is a closure whose defining function has returned.

Example:
    >>> cam = SeedGradCAM(model, model.conv3); cam = SeedGradCAM(model, model.conv3)
    >>> inv = hooks_on(model)
    >>> inv[inv.module == "conv3"][["kind", "function", "looks_leaked"]]
"""

from __future__ import annotations

import gc
import inspect
import logging
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
from torch import nn
from torch.nn.modules import module as torch_module
from torch.utils.hooks import RemovableHandle

from hooklab.core.hooks import HOOK_KIND_TABLE

log = logging.getLogger(__name__)

__all__ = ["GLOBAL", "INVENTORY_COLUMNS", "INVENTORY_KINDS", "HookRow", "describe_hook",
           "hooks_on", "hook_rows", "live_handle_keys"]

#: The ``module`` value of the process-wide hooks (``register_module_forward_hook`` & co).
GLOBAL = "(global)"

#: Kinds the inventory reports beyond :data:`hooklab.core.hooks.HOOK_KIND_TABLE` (these never
#: fire during forward/backward, so the recorder does not offer them): name -> registering API.
INVENTORY_KINDS: dict[str, str] = {
    **{k.name: k.api for k in HOOK_KIND_TABLE.values()},
    "tensor": "tensor.register_hook",
    "state_dict_pre": "module.register_state_dict_pre_hook",
    "state_dict": "module.register_state_dict_post_hook (_register_state_dict_hook)",
    "load_state_dict_pre": "module.register_load_state_dict_pre_hook",
    "load_state_dict_post": "module.register_load_state_dict_post_hook",
}

#: Columns of :func:`hooks_on`'s table, in order.
INVENTORY_COLUMNS: tuple[str, ...] = ("module", "target", "kind", "hook_id", "function", "where",
                                      "looks_leaked", "reason")


@dataclass(frozen=True)
class HookRow:
    """One registered hook."""

    module: str          # module name in the model ("" the model itself, GLOBAL process-wide)
    target: str          # what the dictionary hangs on: "module" or "param:<name>"
    kind: str            # a key of INVENTORY_KINDS
    hook_id: int         # the key in PyTorch's hook dict (RemovableHandle.id)
    function: str        # "<python module>.<qualname>" of the hook function
    where: str           # "file.py:line" where the function is defined ('' when unknown)
    looks_leaked: bool   # no live RemovableHandle can remove it (see the module docstring)
    reason: str          # the facts behind looks_leaked, in one sentence


_MODULE_DICTS: tuple[tuple[str, str], ...] = (
    ("_forward_pre_hooks", "forward_pre"),
    ("_forward_hooks", "forward"),
    ("_backward_pre_hooks", "full_backward_pre"),
    ("_backward_hooks", "?backward"),  # full or deprecated: _is_full_backward_hook decides
    ("_state_dict_pre_hooks", "state_dict_pre"),
    ("_state_dict_hooks", "state_dict"),
    ("_load_state_dict_pre_hooks", "load_state_dict_pre"),
    ("_load_state_dict_post_hooks", "load_state_dict_post"),
)
_GLOBAL_DICTS: tuple[tuple[str, str], ...] = (
    ("_global_forward_pre_hooks", "forward_pre"),
    ("_global_forward_hooks", "forward"),
    ("_global_backward_pre_hooks", "full_backward_pre"),
    ("_global_backward_hooks", "?backward"),
)


def _unwrap(fn: Any) -> Any:
    """The user's function inside PyTorch's wrappers (``_WrappedHook``, partial, bound method)."""
    for _ in range(8):
        inner = getattr(fn, "hook", None)  # torch.nn.modules.module._WrappedHook
        if inner is None:
            inner = getattr(fn, "func", None)  # functools.partial
        if inner is None or inner is fn:
            break
        fn = inner
    return getattr(fn, "__func__", fn)


def describe_hook(fn: Any) -> tuple[str, str]:
    """``("<module>.<qualname>", "file.py:line")`` of a hook function, as far as Python can tell."""
    f = _unwrap(fn)
    qual = getattr(f, "__qualname__", None) or type(f).__qualname__
    mod = getattr(f, "__module__", None) or ""
    where = ""
    try:
        code = getattr(f, "__code__", None)
        if code is not None:
            where = f"{code.co_filename}:{code.co_firstlineno}"
        else:
            file = inspect.getsourcefile(f) or ""
            where = f"{file}:{inspect.getsourcelines(f)[1]}" if file else ""
    except (OSError, TypeError):
        where = ""
    return (f"{mod}.{qual}" if mod else qual), where


def live_handle_keys() -> set[tuple[int, int]]:
    """``(id(hooks dict), hook id)`` of every RemovableHandle alive in the process."""
    keys: set[tuple[int, int]] = set()
    for obj in gc.get_objects():
        if issubclass(type(obj), RemovableHandle):  # type(): no proxy __class__ lookups
            d = obj.hooks_dict_ref()
            if d is not None:
                keys.add((id(d), obj.id))
            for ref in obj.extra_dict_ref or ():
                extra = ref()
                if extra is not None:
                    keys.add((id(extra), obj.id))
    return keys


def _running_code_names() -> set[str]:
    """Qualified names of the functions running now on any thread (for the closure note)."""
    names: set[str] = set()
    for frame in sys._current_frames().values():
        f: Any = frame
        while f is not None:
            names.add(getattr(f.f_code, "co_qualname", f.f_code.co_name))
            f = f.f_back
    return names


def _verdict(fn: Any, func_name: str, handle_alive: bool, running: set[str]) -> tuple[bool, str]:
    f = _unwrap(fn)
    if func_name.startswith("torch."):
        return False, "registered by PyTorch itself"
    qual = getattr(f, "__qualname__", "") or ""
    closure = ""
    if "<locals>" in qual:
        outer = qual.rsplit(".<locals>.", 1)[0]
        state = "is still running" if outer in running else "has returned"
        closure = f"; a closure defined in {outer}(), which {state}"
    if handle_alive:
        return False, "a handle that can remove it is alive" + closure
    return True, "no handle for it is alive, so nothing can remove it" + closure


def _dict_rows(hooks: dict, owner: str, target: str, kind: str, live: set[tuple[int, int]],
               running: set[str]) -> Iterator[HookRow]:
    for hid, fn in list(hooks.items()):
        name, where = describe_hook(fn)
        leaked, reason = _verdict(fn, name, (id(hooks), hid) in live, running)
        yield HookRow(owner, target, kind, int(hid), name, where, leaked, reason)


def _backward_kind(flag: bool | None) -> str:
    return "full_backward" if flag else "backward"


def hook_rows(model: nn.Module, *, include_global: bool = True) -> list[HookRow]:
    """Every hook on ``model`` (and its submodules, parameters, and the global ones) as rows."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"hooks_on() needs an nn.Module, got {type(model).__name__}")
    live = live_handle_keys()
    running = _running_code_names()
    rows: list[HookRow] = []
    for name, module in model.named_modules():
        for attr, kind in _MODULE_DICTS:
            hooks = getattr(module, attr, None)
            if not hooks:
                continue
            k = _backward_kind(module._is_full_backward_hook) if kind == "?backward" else kind
            rows += _dict_rows(hooks, name, "module", k, live, running)
        for pname, p in module.named_parameters(recurse=False):
            for attr, kind in (("_backward_hooks", "tensor"),
                               ("_post_accumulate_grad_hooks", "post_accumulate_grad")):
                hooks = getattr(p, attr, None)
                if hooks:
                    rows += _dict_rows(hooks, name, f"param:{pname}", kind, live, running)
    if include_global:
        for attr, kind in _GLOBAL_DICTS:
            hooks = getattr(torch_module, attr, None)
            if hooks:
                flag = getattr(torch_module, "_global_is_full_backward_hook", None)
                k = _backward_kind(flag) if kind == "?backward" else kind
                rows += _dict_rows(hooks, GLOBAL, "module", k, live, running)
    return rows


def hooks_on(model: nn.Module, *, include_global: bool = True) -> pd.DataFrame:
    """Every hook currently registered on ``model``, one row each (:data:`INVENTORY_COLUMNS`).

    Args:
        model: any ``nn.Module``; its submodules and their own parameters are read too.
        include_global: also list the process-wide module hooks (``module`` = ``"(global)"``).

    Returns:
        A DataFrame in module order, then registration order; empty (with the columns) when
        the model has no hooks. ``looks_leaked`` follows the heuristic in this module's
        docstring; ``reason`` says why.

    Example:
        >>> h = model.conv.register_forward_hook(lambda m, i, o: None)
        >>> hooks_on(model)[["module", "kind", "looks_leaked"]].values.tolist()
        [['conv', 'forward', False]]
        >>> h.remove(); hooks_on(model).empty
        True
    """
    rows = hook_rows(model, include_global=include_global)
    return pd.DataFrame([asdict(r) for r in rows], columns=list(INVENTORY_COLUMNS))

