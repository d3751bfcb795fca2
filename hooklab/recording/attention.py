"""Attention weights out of ``nn.MultiheadAttention``: :func:`attention`.

torchvision's ViT calls its attention as ``x, _ = self.self_attention(x, x, x,
need_weights=False)``: the weights a student wants to see are never computed, let alone
returned. :func:`attention` asks for them with two hooks per ``nn.MultiheadAttention``:

* a forward **pre**-hook registered ``with_kwargs=True`` that rewrites the call's arguments to
  ``need_weights=True, average_attn_weights=False`` (remembering what the caller asked for);
* a forward hook that takes the returned weights ``(B, heads, T, S)`` and hands the caller the
  output *it* asked for: ``(out, None)`` where it passed ``need_weights=False``, the head
  average where it asked for averaged weights, the tuple unchanged where it asked for per-head
  weights. Everything else about the call (masks, ``is_causal``, positional arguments) is
  passed on as it was.

Both handles are removed in ``finally``; after the ``with`` block (also after an exception
inside the attention) the model has exactly the hooks and the call convention it had before.

With ``grad=True`` each captured map is a leaf ``A`` that requires grad and the module's output
is made to depend on it without changing its value: ``out + W_o((A - A.detach()) V)`` (``V`` the
value projection, held fixed; ``W_o`` the output projection without bias). So
``torch.autograd.grad(score, att.weights[name])`` is exactly ``dS/dA`` of that layer's
attention map — the gradient LeGrad needs — while every other gradient is unchanged (the added
term is zero and its gradient reaches nothing but ``A``).

Example:
    >>> with hooklab.attention(vit) as att:
    ...     vit(x)
    >>> att.weights["encoder.layers.encoder_layer_0.self_attention"].shape   # (B, heads, T, T)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hooklab.core.errors import HooklabError
from hooklab.core.layers import LayerSpec, resolve_layers

log = logging.getLogger(__name__)

__all__ = ["AttentionCapture", "AttentionError", "attention", "attention_modules",
           "capture_attention", "resolve_attention"]

#: Positions of ``need_weights`` and ``average_attn_weights`` in
#: ``nn.MultiheadAttention.forward(query, key, value, key_padding_mask, need_weights,
#: attn_mask, average_attn_weights, is_causal)``.
_NEED_POS, _AVG_POS = 4, 6


class AttentionError(HooklabError, ValueError):
    """Attention weights cannot be captured: no ``nn.MultiheadAttention``, or the named module
    is not one (the message names the ones that would work)."""


def attention_modules(model: nn.Module) -> list[str]:
    """Names of every ``nn.MultiheadAttention`` in ``model``, in module order."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]


def _attention_like(model: nn.Module) -> list[str]:
    """Modules whose class name says attention but that are not ``nn.MultiheadAttention``."""
    return [f"{n} ({type(m).__name__})" for n, m in model.named_modules()
            if "attention" in type(m).__name__.lower()
            and not isinstance(m, nn.MultiheadAttention)]


def _listing(names: list[str], n: int = 6) -> str:
    shown = ", ".join(repr(x) for x in names[:n])
    return shown + (f" … ({len(names)} in all)" if len(names) > n else "")


def _no_mha_error(model: nn.Module) -> AttentionError:
    others = _attention_like(model)
    hint = (f"; its attention modules ({_listing(others, 3)}) compute attention inside their "
            "own forward and return no weights" if others else "")
    return AttentionError(f"{type(model).__name__} has no nn.MultiheadAttention module{hint}. "
                          "Attention weights are read from nn.MultiheadAttention only (a "
                          "torchvision ViT or hooklab's simple_vit has one per encoder block)")


def resolve_attention(model: nn.Module, layers: LayerSpec = None) -> list[str]:
    """The ``nn.MultiheadAttention`` modules selected by ``layers`` (``None``: all of them).

    Raises:
        AttentionError: the model has none, or a selected module is not one (names those
            inside it, if any, and the model's).
        LayerNotFoundError: a name matches nothing (close names suggested).
    """
    every = attention_modules(model)
    if not every:
        raise _no_mha_error(model)
    if layers is None:
        return every
    names = resolve_layers(model, layers)
    wrong = [n for n in names if n not in every]
    if wrong:
        n = wrong[0]
        inside = [a for a in every if a.startswith(n + ".") or not n]
        hint = f"; the attention inside it is {_listing(inside, 3)}" if inside else ""
        raise AttentionError(
            f"{n!r} is a {type(model.get_submodule(n)).__name__}, not an nn.MultiheadAttention"
            f"{hint}; the model's MultiheadAttention modules: {_listing(every)}")
    return names


@dataclass
class AttentionCapture:
    """What :func:`attention` collects; filled while the ``with`` block runs.

    Attributes:
        names: the hooked ``nn.MultiheadAttention`` modules, in module order.
        weights: per module, the attention of its last call, ``(B, heads, T, S)`` (rows are
            queries, columns keys; each row sums to 1). Detached float32 unless ``grad=True``:
            then the leaf ``A`` whose gradient is ``dS/dA`` (see the module docstring).
        calls: how many times each module ran inside the block.
        asked: per module, what the last caller asked for: ``(need_weights,
            average_attn_weights)`` (torchvision's ViT: ``(False, True)``).
    """

    names: tuple[str, ...]
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    asked: dict[str, tuple[bool, bool]] = field(default_factory=dict)

    def stacked(self) -> torch.Tensor:
        """Every module's last map stacked: ``(L, B, heads, T, S)`` (same shapes needed).

        Raises:
            AttentionError: a module did not run, or the shapes differ.
        """
        missing = [n for n in self.names if n not in self.weights]
        if missing:
            raise AttentionError(f"attention module(s) {_listing(missing, 3)} did not run in "
                                 "the forward pass")
        shapes = {tuple(self.weights[n].shape) for n in self.names}
        if len(shapes) > 1:
            raise AttentionError(f"attention maps of different shapes {sorted(shapes)}; "
                                 "stack them one module at a time")
        return torch.stack([self.weights[n] for n in self.names])


def _get(args: tuple, kwargs: dict[str, Any], pos: int, key: str, default: Any) -> Any:
    if len(args) > pos:
        return args[pos]
    return kwargs.get(key, default)


def _set(args: tuple, kwargs: dict[str, Any], pos: int, key: str, value: Any
         ) -> tuple[tuple, dict[str, Any]]:
    if len(args) > pos:
        return (*args[:pos], value, *args[pos + 1:]), kwargs
    return args, {**kwargs, key: value}


def _values(m: nn.MultiheadAttention, value: torch.Tensor) -> torch.Tensor:
    """The value projection per head, ``(B, heads, S, head_dim)``, detached."""
    e, h = m.embed_dim, m.num_heads
    if m._qkv_same_embed_dim:
        assert m.in_proj_weight is not None  # packed projections
        w = m.in_proj_weight[2 * e:]
    else:
        w = m.v_proj_weight
    b = m.in_proj_bias[2 * e:] if m.in_proj_bias is not None else None
    v = value if m.batch_first else value.transpose(0, 1)  # (B, S, Ev)
    v = F.linear(v.detach(), w.detach(), None if b is None else b.detach())
    bsz, s = v.shape[:2]
    return v.reshape(bsz, s, h, e // h).transpose(1, 2)


def _probe(m: nn.MultiheadAttention, value: torch.Tensor, out: torch.Tensor,
           weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A leaf copy ``A`` of the weights and the output made to depend on it, same values."""
    if m.bias_v is not None or m.add_zero_attn:
        raise AttentionError("gradients w.r.t. attention maps need an nn.MultiheadAttention "
                             "without bias_k/bias_v and add_zero_attn")
    a = weights.detach().clone().requires_grad_(True)
    v = _values(m, value)
    delta = torch.matmul(a - a.detach(), v.to(a.dtype))  # (B, heads, T, head_dim), all zeros
    bsz, heads, t, d = delta.shape
    delta = delta.transpose(1, 2).reshape(bsz, t, heads * d)
    delta = F.linear(delta, m.out_proj.weight.detach().to(delta.dtype))
    if not m.batch_first:
        delta = delta.transpose(0, 1)
    return a, out + delta.to(out.dtype)


def _hooks(m: nn.MultiheadAttention, name: str, cap: AttentionCapture, grad: bool):
    asked: list[tuple[bool, bool]] = []  # a stack: what each running call asked for

    def pre(_m: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict]:
        need = bool(_get(args, kwargs, _NEED_POS, "need_weights", True))
        avg = bool(_get(args, kwargs, _AVG_POS, "average_attn_weights", True))
        asked.append((need, avg))
        args, kwargs = _set(args, kwargs, _NEED_POS, "need_weights", True)
        return _set(args, kwargs, _AVG_POS, "average_attn_weights", False)

    def post(_m: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> Any:
        need, avg = asked.pop() if asked else (True, False)
        out, weights = output
        cap.calls[name] = cap.calls.get(name, 0) + 1
        cap.asked[name] = (need, avg)
        if grad:
            if not torch.is_grad_enabled():
                raise AttentionError("attention(..., grad=True) needs grad mode (it was "
                                     "called under torch.no_grad)")
            value = args[2] if len(args) > 2 else kwargs["value"]
            a, out = _probe(m, value, out, weights)
            cap.weights[name] = a
        else:
            cap.weights[name] = weights.detach().float()
        if not need:
            return out, None
        if avg:
            return out, weights.mean(dim=1)
        return out, weights

    return pre, post, asked


@contextmanager
def attention(model: nn.Module, layers: LayerSpec = None, *, grad: bool = False
              ) -> Iterator[AttentionCapture]:
    """Capture the per-head attention weights of ``model``'s ``nn.MultiheadAttention`` modules.

    Args:
        model: any model with ``nn.MultiheadAttention`` modules (torchvision's ViT,
            hooklab's ``simple_vit``).
        layers: which ones (a name, glob, type, or a list; ``None``: all); each must be an
            ``nn.MultiheadAttention``.
        grad: make each captured map a leaf whose gradient is ``dS/dA`` (LeGrad); the
            output values are unchanged. Only under grad mode.

    Yields:
        :class:`AttentionCapture`, filled by the forward passes inside the block.

    Raises:
        AttentionError: no ``nn.MultiheadAttention`` in the model, or a named module is not
            one (the message names the model's).

    Example:
        >>> with attention(vit, "encoder.layers.encoder_layer_0.self_attention") as att:
        ...     vit(x)
        >>> att.weights["encoder.layers.encoder_layer_0.self_attention"][0, 2, 0, 1:]
    """
    names = resolve_attention(model, layers)
    cap = AttentionCapture(names=tuple(names))
    handles = []
    stacks: list[list] = []
    try:
        for name in names:
            m = model.get_submodule(name)
            assert isinstance(m, nn.MultiheadAttention)
            pre, post, stack = _hooks(m, name, cap, grad)
            stacks.append(stack)
            handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(m.register_forward_hook(post, with_kwargs=True))
        yield cap
    finally:
        for h in handles:
            h.remove()
        for stack in stacks:
            stack.clear()  # a call that raised between the two hooks left its entry


def capture_attention(model: nn.Module, x: torch.Tensor, layers: LayerSpec = None
                      ) -> tuple[AttentionCapture, torch.Tensor]:
    """One no-grad forward of ``model`` on ``x`` with :func:`attention`; the capture and the
    model's output.

    The model's ``training`` flags are left as they are (call ``model.eval()`` first for
    dropout-free maps).

    Raises:
        AttentionError: as :func:`attention`, or a selected module did not run.
    """
    with attention(model, layers) as att, torch.no_grad():
        out = model(x)
    missing = [n for n in att.names if n not in att.weights]
    if missing:
        raise AttentionError(f"attention module(s) {_listing(missing, 3)} did not run in the "
                             "forward pass")
    return att, out
