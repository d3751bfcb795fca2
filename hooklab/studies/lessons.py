"""The seed's hook lessons (SEED_NOTES §1-§4) as functions that return what happened, and the
attention lesson (a forward pre-hook with ``with_kwargs=True`` that asks a ViT's
``nn.MultiheadAttention`` for the weights it is called without: :func:`attention_lesson`).

Each lesson runs the seed's code, exactly (same seed, same shapes, same numbers), with the seed's
flaws corrected: every hook is removed in ``finally``, the deprecated backward hook is shown next
to the full one, and a forward hook that returns a value is shown to *replace* the output.
The code a lesson runs is in :data:`CODE` (what the "Hook basics" page shows beside the result;
:func:`code` gives it printing in the page's language, :data:`SAYS` holds the printed words).

Example:
    >>> tensor_hook_lesson(k=0.5).x_grad
    96.0
    >>> forward_hook_lesson().output.shape
    torch.Size([1, 2, 4, 4])
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from hooklab.core import edits
from hooklab.models.zoo import SimpleModel, seed_model

log = logging.getLogger(__name__)

__all__ = [
    "CODE", "SAYS", "code", "CallbackLesson", "ForwardHookLesson", "GradEntry", "BackwardKindResult",
    "MultiOpDemo", "BackwardHookLesson", "TensorHookLesson", "ForwardReplaceLesson",
    "callback_lesson", "forward_hook_lesson", "backward_hook_lesson", "tensor_hook_lesson",
    "forward_replace_lesson", "BACKWARD_KINDS", "AttentionLesson", "attention_lesson",
    "attention_model", "FALLBACK_VIT",
]

# ----------------------------------------------------------------------------------------------
# The code each lesson runs, as the page shows it (the seed's code, with hooks removed in finally)
# ----------------------------------------------------------------------------------------------
CODE: dict[str, str] = {
    "callback": '''\
def handle_result(result):
    print(f"result: {result}")

def calculate(a, b, callback):
    result = a + b
    callback(result)          # the callback is "hooked in" at this point
    return result

calculate(3, 5, handle_result)   # prints: result: 8

def with_callback(callback):     # the same with a decorator
    def decorator(func):
        def wrapper(a, b):
            result = func(a, b)
            callback(result)
            return result
        return wrapper
    return decorator

@with_callback(handle_result)
def add(a, b):
    return a + b

add(3, 5)                        # prints: result: 8
square = lambda x: x ** 2
print(square(5))                 # 25''',
    "forward": '''\
torch.manual_seed(42)
model = SimpleModel()            # conv(1->2, 3x3, pad 1) -> relu -> view(-1, 32) -> fc(32 -> 10)
conv_outputs = []

def forward_hook(module, input, output):
    print(f"hook called! module type: {type(module)}")
    print(f"input shape: {input[0].shape}")
    print(f"output shape: {output.shape}")
    conv_outputs.append(output.detach())

handle = model.conv.register_forward_hook(forward_hook)
try:
    x = torch.randn(1, 1, 4, 4)
    output = model(x)
finally:
    handle.remove()              # always, even if forward raised''',
    "backward": '''\
# the seed's backward hook, on the same conv (deprecated API)
def backward_hook(module, grad_input, grad_output):
    print(f"backward hook called! module type: {type(module)}")
    print(f"number of grad_input: {len(grad_input)}")
    print(f"number of grad_output: {len(grad_output)}")

handle = model.conv.register_backward_hook(backward_hook)        # deprecated
# handle = model.conv.register_full_backward_hook(backward_hook) # the documented one
try:
    x = torch.randn(1, 1, 4, 4, requires_grad=True)
    loss = model(x).sum()
    loss.backward()
finally:
    handle.remove()''',
    "multi_op": '''\
class TwiceplusOne(nn.Module):          # two autograd ops: mul, then add
    def forward(self, x):
        return x * 2 + 1

def show(module, grad_input, grad_output):
    print(f"grad_input[0]: {grad_input[0]}")

x = torch.tensor([1.0, 2.0], requires_grad=True)
for kind in ("register_backward_hook", "register_full_backward_hook"):
    m = TwiceplusOne()                  # a fresh module: the two kinds cannot be mixed on one
    handle = getattr(m, kind)(show)
    try:
        m(x).sum().backward()
    finally:
        handle.remove()
# deprecated: the gradient of the LAST op (add) -> [1, 1]   (wrong)
# full:       dL/dx of the whole module         -> [2, 2]   (right)
print(torch.autograd.grad(m(x).sum(), x))   # (tensor([2., 2.]),)''',
    "tensor": '''\
k = 0.5                                  # the slider (the seed halves: 0.5)
x = torch.tensor([2.0], requires_grad=True)
y = x ** 2
z = y ** 3

def tensor_hook(grad):
    print(f"gradient seen: {grad}")      # dz/dy = 3 y^2 = 48
    return grad * k                      # the seed: grad / 2

handle = y.register_hook(tensor_hook)
try:
    z.backward()
finally:
    handle.remove()
print(f"x.grad: {x.grad}")               # 48 * k * 2x = 192 k  (96 for k = 0.5)''',
    "replace": '''\
# A forward hook that RETURNS a value replaces the module's output
# (the seed says it cannot; it can).
def zero_output(module, input, output):
    return torch.zeros_like(output)

# A forward PRE-hook that returns a value replaces the module's input.
def zero_input(module, args):
    return (torch.zeros_like(args[0]),)

handle = model.conv.register_forward_hook(zero_output)
try:
    logits = model(x)                    # conv output replaced by zeros: logits == fc.bias
finally:
    handle.remove()
print(f"logits == fc.bias: {torch.allclose(logits[0], model.fc.bias)}")

handle = model.conv.register_forward_pre_hook(zero_input)
try:
    conv_out = model.conv(x)             # the input was replaced by zeros: only the bias is left
finally:
    handle.remove()
bias = model.conv.bias.view(1, -1, 1, 1).expand_as(conv_out)
print(f"conv output == conv.bias everywhere: {torch.allclose(conv_out, bias)}")''',
    "attention": '''\
# torchvision's ViT block: x, _ = self.self_attention(x, x, x, need_weights=False)
attn = model.encoder.layers.encoder_layer_3.self_attention    # an nn.MultiheadAttention
weights, queries, asked = [], [], []

def ask_for_weights(module, args, kwargs):        # forward PRE-hook, with_kwargs=True
    asked.append(kwargs.get("need_weights"))      # what the caller passed
    queries.append(args[0].detach())              # query = key = value: the ln_1 output
    kwargs = {**kwargs, "need_weights": True,     # compute the weights ...
              "average_attn_weights": False}      # ... one map per head
    return args, kwargs                           # forward is called with these

def take_weights(module, args, output):           # forward hook
    out, w = output                               # w: (B, heads, T, T)
    weights.append(w.detach())
    return out, None                              # what the caller asked for

handles = [attn.register_forward_pre_hook(ask_for_weights, with_kwargs=True),
           attn.register_forward_hook(take_weights)]
try:
    logits = model(x)                             # x: one shapes image (1, 3, 32, 32)
finally:
    for h in handles:
        h.remove()                                # always, even if forward raised

w = weights[0]
print(f"the caller passed need_weights={asked[0]}")
print(f"attention weights: {tuple(w.shape)}")    # 4 heads, 1 class + 8x8 patch tokens
cls = w[0, :, 0, 1:].reshape(-1, 8, 8)           # class token's row: one 8x8 map per head

# the same weights by hand: q, k from in_proj, scaled dot product, softmax
E, H = attn.embed_dim, attn.num_heads
q, k, _ = F.linear(queries[0], attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
q, k = (t.reshape(1, -1, H, E // H).transpose(1, 2) for t in (q, k))
by_hand = torch.softmax(q @ k.transpose(-2, -1) / (E // H) ** 0.5, dim=-1)
print(f"max |hook - by hand|: {(w - by_hand).abs().max():.1e}")''',
}

#: What the lessons print, in English and in the seed's Chinese (the printed prefixes).
SAYS: dict[str, dict[str, str]] = {
    "en": {
        "result": "result: ",
        "hook_called": "hook called! module type: ",
        "input_shape": "input shape: ",
        "output_shape": "output shape: ",
        "backward_called": "backward hook called! module type: ",
        "n_grad_input": "number of grad_input: ",
        "n_grad_output": "number of grad_output: ",
        "tensor_hook": "tensor hook: grad shape ",
        "grad_seen": "gradient seen: ",
        "x_grad": "x.grad: ",
        "caller_passed": "the caller passed ",
        "attn_weights": "attention weights: ",
        "by_hand": "max |hook - by hand|: ",
    },
    "zh": {
        "result": "计算结果是: ",
        "hook_called": "钩子被调用!模块类型: ",
        "input_shape": "输入形状: ",
        "output_shape": "输出形状: ",
        "backward_called": "反向钩子被调用!模块类型: ",
        "n_grad_input": "输入梯度数量: ",
        "n_grad_output": "输出梯度数量: ",
        "tensor_hook": "张量钩子: 梯度形状 ",
        "grad_seen": "原始梯度: ",
        "x_grad": "x的梯度: ",
        "caller_passed": "调用方传入 ",
        "attn_weights": "注意力权重: ",
        "by_hand": "钩子与手算的最大差 |hook - by hand|: ",
    },
}


def _says(lang: str) -> dict[str, str]:
    try:
        return SAYS[lang]
    except KeyError as exc:
        raise ValueError(f"unknown language {lang!r}; known: {', '.join(SAYS)}") from exc


def code(name: str, lang: str = "en", *, k: float | None = None, block: int | None = None
         ) -> str:
    """The snippet of lesson ``name`` as the page shows it: printing in ``lang``.

    Args:
        name: a key of :data:`CODE`.
        lang: ``"en"`` or ``"zh"``; the printed prefixes come from :data:`SAYS`.
        k: for ``"tensor"``, the factor on the page's slider (the snippet's first line).
        block: for ``"attention"``, the encoder block chosen on the page.

    Example:
        >>> code("tensor", "zh", k=0.25).splitlines()[0].split("#")[0].strip()
        'k = 0.25'
    """
    says = _says(lang)
    text = CODE[name]
    # longest first: "hook called! ..." is part of "backward hook called! ..."
    for key in sorted(SAYS["en"], key=lambda key: -len(SAYS["en"][key])):
        text = text.replace(SAYS["en"][key], says[key])
    if k is not None and name == "tensor":
        shown = f"{float(k):g}" if float(f"{float(k):g}") == float(k) else repr(float(k))
        text = text.replace("k = 0.5", f"k = {shown}", 1)
    if block is not None and name == "attention":
        text = text.replace("encoder_layer_3", f"encoder_layer_{int(block)}", 1)
    return text


# ----------------------------------------------------------------------------------------------
# §1 callbacks (background)
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CallbackLesson:
    """The seed's callback/lambda warm-up: ``calculate(3, 5, handle_result)`` and ``square(5)``."""

    calculate: int
    decorated: int
    square: int
    lines: list[str]


def callback_lesson(lang: str = "en") -> CallbackLesson:
    """Run the seed's callback, decorator and lambda examples; prints become ``lines``.

    Args:
        lang: language of the printed lines (``"en"``, or ``"zh"`` as in the seed).
    """
    says = _says(lang)
    lines: list[str] = []

    def handle_result(result: int) -> None:
        lines.append(f"{says['result']}{result}")

    def calculate(a: int, b: int, callback: Callable[[int], None]) -> int:
        result = a + b
        callback(result)
        return result

    def with_callback(callback: Callable[[int], None]):
        def decorator(func):
            def wrapper(a, b):
                result = func(a, b)
                callback(result)
                return result
            return wrapper
        return decorator

    @with_callback(handle_result)
    def add(a: int, b: int) -> int:
        return a + b

    square = lambda x: x ** 2  # noqa: E731 - the seed's lambda, on purpose
    plain, decorated = calculate(3, 5, handle_result), add(3, 5)
    lines.append(f"{square(5)}")  # the seed's print(square(5))
    return CallbackLesson(plain, decorated, square(5), lines)


# ----------------------------------------------------------------------------------------------
# §2 forward hook
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ForwardHookLesson:
    """What the seed's forward hook on ``SimpleModel.conv`` saw.

    Attributes:
        input: the input ``x``, shape ``(1, 1, 4, 4)``.
        output: the conv output the hook stored (detached), shape ``(1, 2, 4, 4)``.
        logits: the model output, shape ``(1, 10)``.
        lines: what the hook printed, one string per ``print``.
        calls: how many times the hook fired (1).
    """

    input: torch.Tensor
    output: torch.Tensor
    logits: torch.Tensor
    lines: list[str]
    calls: int

    @property
    def channel_maps(self) -> list[torch.Tensor]:
        """The two 4x4 channel maps of the conv output (the seed's panels 2 and 3)."""
        return [self.output[0, c] for c in range(self.output.shape[1])]

    @property
    def input_map(self) -> torch.Tensor:
        """The 4x4 input image (the seed's panel 1)."""
        return self.input[0, 0]


def _seed_setup(seed: int) -> tuple[SimpleModel, torch.Tensor, torch.Tensor]:
    """The seed's order: ``torch.manual_seed(seed); model = SimpleModel()``, the forward section's
    ``x = torch.randn(1, 1, 4, 4)``, then the backward section's second ``randn(1, 1, 4, 4)``.

    The global RNG is used exactly as in the seed, then restored, so calling a lesson does not
    change any other random stream in the process.
    """
    state = torch.random.get_rng_state()
    try:
        model = seed_model(seed)
        x_forward = torch.randn(1, 1, 4, 4)
        x_backward = torch.randn(1, 1, 4, 4)
    finally:
        torch.random.set_rng_state(state)
    return model.eval(), x_forward, x_backward


def forward_hook_lesson(seed: int = 42, lang: str = "en") -> ForwardHookLesson:
    """Run the seed's forward hook (§2): conv input ``(1, 1, 4, 4)`` -> output ``(1, 2, 4, 4)``.

    Args:
        seed: the seed's ``torch.manual_seed(42)``; the model and input are built right after it.
        lang: language of the printed lines (``"en"``, or ``"zh"`` as in the seed).

    Returns:
        :class:`ForwardHookLesson` with the input, the stored conv output, the printed lines.
    """
    says = _says(lang)
    model, x, _ = _seed_setup(seed)
    conv_outputs: list[torch.Tensor] = []
    lines: list[str] = []

    def forward_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...],
                     output: torch.Tensor) -> None:
        lines.append(f"{says['hook_called']}{type(module)}")
        lines.append(f"{says['input_shape']}{inputs[0].shape}")
        lines.append(f"{says['output_shape']}{output.shape}")
        conv_outputs.append(output.detach())

    handle = model.conv.register_forward_hook(forward_hook)
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        handle.remove()
    return ForwardHookLesson(input=x, output=conv_outputs[0], logits=logits, lines=lines,
                             calls=len(conv_outputs))


# ----------------------------------------------------------------------------------------------
# §3 backward hooks: what each kind receives
# ----------------------------------------------------------------------------------------------
#: Backward hook kinds the lesson compares, with how each is registered and what it receives.
BACKWARD_KINDS: dict[str, dict[str, str]] = {
    "backward": {
        "register": "module.register_backward_hook(hook)",
        "signature": "hook(module, grad_input, grad_output)",
        "note": "Deprecated. grad_input holds the gradients of the inputs of the LAST autograd "
                "op inside the module (for a conv: input, weight, bias), not of the module's "
                "inputs. Right only for single-op modules.",
    },
    "full_backward": {
        "register": "module.register_full_backward_hook(hook)",
        "signature": "hook(module, grad_input, grad_output)",
        "note": "grad_input = gradients w.r.t. the module's positional tensor inputs, "
                "grad_output = gradients w.r.t. its outputs, whatever runs inside. Raises if an "
                "in-place op modifies the module's output afterwards.",
    },
    "full_backward_pre": {
        "register": "module.register_full_backward_pre_hook(hook)",
        "signature": "hook(module, grad_output)",
        "note": "Fires before the module's input gradients are computed; sees grad_output only "
                "and may return a replacement for it.",
    },
    "tensor": {
        "register": "output.register_hook(hook)  # inside a forward hook",
        "signature": "hook(grad)",
        "note": "The gradient w.r.t. that one tensor; may return a replacement. Safe with "
                "in-place ops afterwards: what hooklab's recorder uses.",
    },
}


@dataclass(frozen=True)
class GradEntry:
    """One entry of a backward hook's ``grad_input`` / ``grad_output`` tuple.

    Attributes:
        name: e.g. ``"grad_input[0]"``.
        meaning: what the entry is the gradient of, e.g. ``"dL/d input x"``.
        value: the tensor the hook received (``None`` when PyTorch passed ``None``).
        reference: the same gradient from ``torch.autograd.grad`` on the same graph.
    """

    name: str
    meaning: str
    value: torch.Tensor | None
    reference: torch.Tensor | None

    @property
    def shape(self) -> tuple[int, ...] | None:
        return None if self.value is None else tuple(self.value.shape)

    @property
    def matches(self) -> bool:
        """True when the received value equals the autograd reference (shape and values)."""
        if self.value is None or self.reference is None:
            return self.value is None and self.reference is None
        return (self.value.shape == self.reference.shape
                and torch.allclose(self.value, self.reference, rtol=1e-5, atol=1e-6))


@dataclass(frozen=True)
class BackwardKindResult:
    """What one backward hook kind received on the conv."""

    kind: str
    register: str
    signature: str
    note: str
    grad_input: list[GradEntry]
    grad_output: list[GradEntry]
    lines: list[str]
    warnings: list[str]

    def rows(self) -> list[dict[str, Any]]:
        return [
            {"kind": self.kind, "entry": e.name, "meaning": e.meaning,
             "shape": "None" if e.shape is None else "x".join(map(str, e.shape)),
             "matches autograd": e.matches}
            for e in [*self.grad_input, *self.grad_output]
        ]


@dataclass(frozen=True)
class MultiOpDemo:
    """A module with several autograd ops, where the deprecated hook's grad_input is wrong.

    Attributes:
        name: the module's name.
        code: its forward, as text.
        input: the input tensor.
        deprecated: ``grad_input[0]`` received by ``register_backward_hook``.
        full: ``grad_input[0]`` received by ``register_full_backward_hook``.
        reference: ``torch.autograd.grad(loss, x)``.
        explanation: one paragraph on why they differ.
    """

    name: str
    code: str
    input: torch.Tensor
    deprecated: torch.Tensor
    full: torch.Tensor
    reference: torch.Tensor
    explanation: str

    @property
    def deprecated_matches(self) -> bool:
        return (self.deprecated.shape == self.reference.shape
                and torch.allclose(self.deprecated, self.reference, rtol=1e-5, atol=1e-6))

    @property
    def full_matches(self) -> bool:
        return (self.full.shape == self.reference.shape
                and torch.allclose(self.full, self.reference, rtol=1e-5, atol=1e-6))


@dataclass(frozen=True)
class BackwardHookLesson:
    """What every backward hook kind receives on ``SimpleModel.conv`` (§3), and why they differ.

    Attributes:
        x: the input (``requires_grad=True``), the seed's second ``randn(1, 1, 4, 4)``.
        loss: ``model(x).sum()``.
        kinds: one :class:`BackwardKindResult` per kind in :data:`BACKWARD_KINDS`.
        multi_op: modules where the deprecated hook's grad_input is wrong, shown numerically.
        explanation: the paragraph the page shows.
    """

    x: torch.Tensor
    loss: float
    kinds: dict[str, BackwardKindResult]
    multi_op: list[MultiOpDemo]
    explanation: str = field(default="")

    def table(self) -> pd.DataFrame:
        """One row per received entry: kind, entry, meaning, shape, matches autograd."""
        return pd.DataFrame([r for k in self.kinds.values() for r in k.rows()])


class TwiceplusOne(nn.Module):
    """``x * 2 + 1``: two autograd ops in one module (the deprecated hook sees only the add)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 + 1


class ConvReLU(nn.Module):
    """``relu(conv(x))`` in one module: the deprecated hook sees the ReLU's input gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x))


_M = TypeVar("_M", bound=nn.Module)


def _fresh(module: _M) -> _M:
    """A copy of ``module`` with no hook history.

    After ``register_backward_hook`` PyTorch marks a module and refuses full backward hooks on it
    for good (removing the handle does not reset the mark), so each kind gets its own copy.
    """
    return copy.deepcopy(module)


def _run_backward_kind(kind: str, model: SimpleModel, x: torch.Tensor,
                       refs: dict[str, torch.Tensor], lang: str = "en") -> BackwardKindResult:
    """Attach one hook kind to a fresh copy of ``model.conv``, run ``model(x).sum().backward()``."""
    says = _says(lang)
    model = _fresh(model)  # PyTorch forbids mixing deprecated/full hooks on one module
    received: dict[str, tuple] = {}
    lines: list[str] = []
    handles: list[Any] = []
    conv = model.conv

    def backward_hook(module, grad_input, grad_output):
        lines.append(f"{says['backward_called']}{type(module)}")
        lines.append(f"{says['n_grad_input']}{len(grad_input)}")
        lines.append(f"{says['n_grad_output']}{len(grad_output)}")
        received["grad_input"] = tuple(None if g is None else g.detach().clone()
                                       for g in grad_input)
        received["grad_output"] = tuple(g.detach().clone() for g in grad_output)

    def pre_hook(module, grad_output):
        lines.append(f"{says['n_grad_output']}{len(grad_output)}")
        received["grad_input"] = ()
        received["grad_output"] = tuple(g.detach().clone() for g in grad_output)

    def tensor_hook(grad):
        lines.append(f"{says['tensor_hook']}{tuple(grad.shape)}")
        received["grad_input"] = ()
        received["grad_output"] = (grad.detach().clone(),)

    def forward_hook(module, inputs, output):
        handles.append(output.register_hook(tensor_hook))

    caught: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            if kind == "backward":
                handles.append(conv.register_backward_hook(backward_hook))
            elif kind == "full_backward":
                handles.append(conv.register_full_backward_hook(backward_hook))
            elif kind == "full_backward_pre":
                handles.append(conv.register_full_backward_pre_hook(pre_hook))
            elif kind == "tensor":
                handles.append(conv.register_forward_hook(forward_hook))
            else:
                raise ValueError(f"unknown backward hook kind {kind!r}; "
                                 f"known: {', '.join(BACKWARD_KINDS)}")
            xx = x.detach().clone().requires_grad_(True)
            model(xx).sum().backward()
            caught = sorted({str(m.message) for m in w})
    finally:
        for h in handles:
            h.remove()

    out_entry = [GradEntry("grad_output[0]" if kind != "tensor" else "grad",
                           "dL/d conv output", g, refs["out"])
                 for g in received.get("grad_output", ())]
    if kind == "backward":
        names = [("grad_input[0]", "dL/d conv input x", "x"),
                 ("grad_input[1]", "dL/d conv.weight", "weight"),
                 ("grad_input[2]", "dL/d conv.bias", "bias")]
    elif kind == "full_backward":
        names = [("grad_input[0]", "dL/d conv input x", "x")]
    else:
        names = []
    gi = received.get("grad_input", ())
    in_entries = [GradEntry(n, meaning, gi[i] if i < len(gi) else None, refs[r])
                  for i, (n, meaning, r) in enumerate(names)]
    # entries PyTorch gave beyond the ones we can name
    for i in range(len(names), len(gi)):
        in_entries.append(GradEntry(f"grad_input[{i}]", "?", gi[i], None))
    spec = BACKWARD_KINDS[kind]
    return BackwardKindResult(kind, spec["register"], spec["signature"], spec["note"],
                              in_entries, out_entry, lines, caught)


def _multi_op_demos(seed: int) -> list[MultiOpDemo]:
    demos: list[MultiOpDemo] = []
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        conv_relu = ConvReLU()
        xc = torch.randn(1, 1, 4, 4)
    finally:
        torch.random.set_rng_state(state)
    cases: list[tuple[str, str, nn.Module, torch.Tensor, str]] = [
        ("TwiceplusOne", "return x * 2 + 1", TwiceplusOne(), torch.tensor([1.0, 2.0]),
         "The module runs two autograd ops (mul, add). The deprecated hook attaches to the last "
         "one, so its grad_input is d loss / d (x*2) = [1, 1]; the true d loss / dx is 2 * 1 = "
         "[2, 2], which the full hook and torch.autograd.grad both give."),
        ("ConvReLU", "return F.relu(self.conv(x))", conv_relu, xc,
         "The deprecated hook sees the ReLU's input gradient: shape (1, 2, 4, 4), the conv "
         "output, not the module input (1, 1, 4, 4). The full hook gives the gradient w.r.t. x."),
    ]
    for name, code, module, x, why in cases:
        got: dict[str, torch.Tensor] = {}
        for kind in ("backward", "full_backward"):
            m = _fresh(module)

            def hook(mod, grad_input, grad_output, _kind=kind, _got=got):
                _got[_kind] = grad_input[0].detach().clone()

            register = (m.register_backward_hook if kind == "backward"
                        else m.register_full_backward_hook)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                handle = register(hook)
                try:
                    xx = x.clone().requires_grad_(True)
                    m(xx).sum().backward()
                finally:
                    handle.remove()
        xr = x.clone().requires_grad_(True)
        (ref,) = torch.autograd.grad(module(xr).sum(), xr)
        demos.append(MultiOpDemo(name, code, x, got["backward"], got["full_backward"], ref, why))
    return demos


BACKWARD_EXPLANATION = (
    "register_backward_hook (deprecated) is attached to the grad_fn of the module's output, i.e. "
    "to the LAST autograd operation inside the module. Its grad_input is the gradient with respect "
    "to that operation's inputs. For a Conv2d that is a single op, so grad_input = (dL/dx, dL/dW, "
    "dL/db): three entries, as the seed prints. For a module with several ops (x*2+1, conv then "
    "relu) it gives the gradient of an internal tensor, with the wrong values or even the wrong "
    "shape. register_full_backward_hook always gives dL/d(module inputs) and dL/d(module outputs). "
    "Both kinds cannot be mixed on one module."
)


def backward_hook_lesson(seed: int = 42, lang: str = "en") -> BackwardHookLesson:
    """What each backward hook kind receives on the seed's conv (§3), checked against autograd.

    The model and input are the seed's (``torch.manual_seed(seed)``, ``SimpleModel()``, then the
    second ``randn(1, 1, 4, 4)``), with ``loss = model(x).sum()``. Every kind runs on its own
    copy of the model (PyTorch refuses deprecated and full hooks on one module).

    Args:
        seed: the seed's ``torch.manual_seed(42)``.
        lang: language of the printed lines (``"en"``, or ``"zh"`` as in the seed).

    Returns:
        :class:`BackwardHookLesson`; ``kinds["backward"].grad_input`` has 3 entries
        (x, weight, bias), ``kinds["full_backward"].grad_input`` has 1 (x).
    """
    _says(lang)
    model, _, x = _seed_setup(seed)
    # reference gradients from plain autograd on the same graph
    xr = x.clone().requires_grad_(True)
    conv_out = model.conv(xr)
    loss = model.fc(model.relu(conv_out).view(-1, 32)).sum()
    gx, gw, gb, gout = torch.autograd.grad(loss, [xr, model.conv.weight, model.conv.bias,
                                                  conv_out])
    refs = {"x": gx, "weight": gw, "bias": gb, "out": gout}
    kinds = {k: _run_backward_kind(k, model, x, refs, lang) for k in BACKWARD_KINDS}
    return BackwardHookLesson(x=x, loss=loss.item(), kinds=kinds, multi_op=_multi_op_demos(seed),
                              explanation=BACKWARD_EXPLANATION)


# ----------------------------------------------------------------------------------------------
# §4 tensor hook that scales a gradient
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorHookLesson:
    """The seed's tensor hook on ``y`` in ``z = (x**2)**3``, with factor ``k`` (0.5 halves).

    Chain rule: ``dz/dx = dz/dy · k · dy/dx = 3y² · k · 2x``; at ``x = 2``: ``48 · k · 4 = 192 k``.

    Attributes:
        x, y, z: the forward values (2, 4, 64 at the seed's x).
        k: the factor the hook multiplies the gradient by.
        dz_dy: the gradient the hook received (48).
        dz_dy_edited: what it returned (48 k).
        dy_dx: the local derivative 2x (4).
        x_grad: ``x.grad`` after ``z.backward()`` with the hook (192 k).
        x_grad_without_hook: ``torch.autograd.grad(z, x)`` with no hook (192).
        lines: what the hook and the script printed.
    """

    x: float
    y: float
    z: float
    k: float
    dz_dy: float
    dz_dy_edited: float
    dy_dx: float
    x_grad: float
    x_grad_without_hook: float
    lines: list[str]

    @property
    def chain_rule(self) -> str:
        """The chain rule with the live numbers."""
        return (f"dz/dx = dz/dy · k · dy/dx = 3y² · k · 2x = {self.dz_dy:g} · {self.k:g} · "
                f"{self.dy_dx:g} = {self.x_grad:g}")


def tensor_hook_lesson(k: float = 0.5, x0: float = 2.0, lang: str = "en") -> TensorHookLesson:
    """Run the seed's tensor hook (§4) with the gradient multiplied by ``k``.

    Args:
        k: factor applied by the hook (``hooklab.core.edits.scale(k)``); the seed's ``grad / 2`` is 0.5.
        x0: the value of ``x`` (the seed's 2.0).
        lang: language of the printed lines (``"en"``, or ``"zh"`` as in the seed).

    Returns:
        :class:`TensorHookLesson`; at the defaults ``dz_dy == 48`` and ``x_grad == 96``.

    Example:
        >>> tensor_hook_lesson(1.0).x_grad
        192.0
    """
    says = _says(lang)
    edit = edits.scale(k)
    x = torch.tensor([float(x0)], requires_grad=True)
    y = x ** 2
    z = y ** 3
    seen: list[torch.Tensor] = []
    returned: list[torch.Tensor] = []
    lines: list[str] = []

    def tensor_hook(grad: torch.Tensor) -> torch.Tensor:
        lines.append(f"{says['grad_seen']}{grad}")
        seen.append(grad.detach().clone())
        new = edit(grad)
        returned.append(new.detach().clone())
        return new

    handle = y.register_hook(tensor_hook)
    try:
        z.backward()
    finally:
        handle.remove()
    lines.append(f"{says['x_grad']}{x.grad}")
    assert x.grad is not None  # x is a leaf that requires grad: backward() filled it
    xr = torch.tensor([float(x0)], requires_grad=True)
    (plain,) = torch.autograd.grad((xr ** 2) ** 3, xr)
    return TensorHookLesson(
        x=float(x0), y=y.item(), z=z.item(), k=float(k), dz_dy=float(seen[0]),
        dz_dy_edited=float(returned[0]), dy_dx=2.0 * float(x0), x_grad=float(x.grad),
        x_grad_without_hook=float(plain), lines=lines)


# ----------------------------------------------------------------------------------------------
# Forward hooks CAN replace values (correcting the seed)
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ForwardReplaceLesson:
    """A forward hook returning a value replaces the output; a pre-hook replaces the input.

    Attributes:
        logits: the model output without hooks.
        logits_output_replaced: with a forward hook on conv returning zeros -> equals fc.bias.
        fc_bias: ``model.fc.bias``.
        conv_output: the conv output without hooks.
        conv_output_input_replaced: with a pre-hook on conv returning a zero input -> every
            position of channel c equals ``conv.bias[c]``.
        conv_bias: ``model.conv.bias``.
    """

    logits: torch.Tensor
    logits_output_replaced: torch.Tensor
    fc_bias: torch.Tensor
    conv_output: torch.Tensor
    conv_output_input_replaced: torch.Tensor
    conv_bias: torch.Tensor
    claim: str = ("The seed says a forward hook can look at the output but not modify it. In "
                  "fact, if a forward hook returns a value, PyTorch uses it as the module's "
                  "output; a forward pre-hook that returns a value replaces the input.")

    @property
    def output_replaced(self) -> bool:
        """True when the logits with the replacing hook equal fc.bias (the conv output was zero)."""
        return torch.allclose(self.logits_output_replaced[0], self.fc_bias)

    @property
    def input_replaced(self) -> bool:
        """True when the conv output with the replacing pre-hook is the bias everywhere."""
        expect = self.conv_bias.view(1, -1, 1, 1).expand_as(self.conv_output_input_replaced)
        return torch.allclose(self.conv_output_input_replaced, expect)


def forward_replace_lesson(seed: int = 42) -> ForwardReplaceLesson:
    """Show that forward hooks can replace values (the seed claims they cannot).

    A forward hook on ``conv`` returns ``zeros_like(output)``: the logits become exactly
    ``fc.bias``. A forward pre-hook returns ``(zeros_like(x),)``: the conv output becomes
    ``conv.bias`` in every position.
    """
    model, x, _ = _seed_setup(seed)
    captured: list[torch.Tensor] = []

    def zero_output(module, inputs, output):
        return torch.zeros_like(output)

    def zero_input(module, args):
        return (torch.zeros_like(args[0]),)

    def keep(module, inputs, output):
        captured.append(output.detach().clone())

    with torch.no_grad():
        handles = [model.conv.register_forward_hook(keep)]
        try:
            logits = model(x)
        finally:
            for h in handles:
                h.remove()
        handles = [model.conv.register_forward_hook(zero_output)]
        try:
            logits_replaced = model(x)
        finally:
            for h in handles:
                h.remove()
        handles = [model.conv.register_forward_pre_hook(zero_input),
                   model.conv.register_forward_hook(keep)]
        try:
            model(x)
        finally:
            for h in handles:
                h.remove()
    assert model.conv.bias is not None  # SimpleModel's conv has a bias
    return ForwardReplaceLesson(
        logits=logits, logits_output_replaced=logits_replaced,
        fc_bias=model.fc.bias.detach().clone(), conv_output=captured[0],
        conv_output_input_replaced=captured[1], conv_bias=model.conv.bias.detach().clone())


# ----------------------------------------------------------------------------------------------
# Attention as a hook lesson: a forward pre-hook with kwargs asks nn.MultiheadAttention for the
# weights torchvision's ViT never returns
# ----------------------------------------------------------------------------------------------
#: The lesson's ViT when the zoo has no simple_vit: torchvision's ViT at SimpleViT's sizes.
FALLBACK_VIT = {"image_size": 32, "patch_size": 4, "num_layers": 4, "num_heads": 4,
                "hidden_dim": 64, "mlp_dim": 128}


@dataclass(frozen=True)
class AttentionLesson:
    """What the attention lesson's hooks saw on one shapes image.

    Attributes:
        model: which model ran (``"simple_vit (shipped weights, shapes)"`` or a fallback).
        layer: the ``nn.MultiheadAttention`` the hooks were on.
        image: the input as shown, float32 ``(32, 32, 3)`` in [0, 1].
        label: the image's class name; prediction: the model's.
        asked: the ``need_weights`` the caller passed (torchvision's ViT: ``False``).
        weights: ``(1, heads, T, T)`` the weights the forward hook took.
        by_hand: the same from q, k (in_proj weights, scaled dot product, softmax).
        maps: ``(heads, gh, gw)`` the class token's attention over the patch grid.
        library: ``hooklab.attention``'s weights of the same module on the same input.
        logits, logits_without_hooks: the model output with and without the two hooks.
        lines: what the snippet printed.
    """

    model: str
    layer: str
    image: Any
    label: str
    prediction: str
    asked: bool | None
    weights: torch.Tensor
    by_hand: torch.Tensor
    maps: torch.Tensor
    library: torch.Tensor
    logits: torch.Tensor
    logits_without_hooks: torch.Tensor
    lines: list[str]

    @property
    def heads(self) -> int:
        """Number of attention heads."""
        return int(self.weights.shape[1])

    @property
    def max_error(self) -> float:
        """``max |hook - by hand|``."""
        return float((self.weights - self.by_hand).abs().max())

    @property
    def matches_by_hand(self) -> bool:
        """The hook's weights equal the weights computed by hand from q and k."""
        return torch.allclose(self.weights, self.by_hand, atol=1e-5, rtol=1e-4)

    @property
    def matches_library(self) -> bool:
        """The snippet's weights equal ``hooklab.attention``'s."""
        return torch.allclose(self.weights, self.library, atol=1e-6, rtol=1e-5)

    @property
    def output_unchanged(self) -> bool:
        """The hooks left the model's output as it was (up to the fused kernel's rounding)."""
        return torch.allclose(self.logits, self.logits_without_hooks, atol=1e-5, rtol=1e-4)


def attention_model() -> tuple[nn.Module, str, tuple[str, ...]]:
    """The lesson's ViT, its description and class names.

    hooklab's ``simple_vit`` with its shipped shapes weights when they exist, else ``simple_vit``
    with random weights (seed 0), else torchvision's ViT at the same sizes
    (:data:`FALLBACK_VIT`, seed 0). The global RNG is left as it was.
    """
    from torchvision.models.vision_transformer import VisionTransformer

    from hooklab.core.errors import HooklabError
    from hooklab.data.datasets import SHAPE_CLASSES
    from hooklab.models import zoo

    classes = tuple(SHAPE_CLASSES)
    shipped = getattr(zoo, "SHIPPED_WEIGHTS", {})
    if "simple_vit" in zoo.MODEL_NAMES and ("simple_vit", "shapes") in shipped:
        try:
            return (zoo.get_model("simple_vit", weights="shapes"),
                    "simple_vit (shipped weights, shapes)", classes)
        except HooklabError as exc:
            log.warning("simple_vit's shipped weights are not usable (%s); random weights", exc)
    state = torch.random.get_rng_state()
    try:
        if "simple_vit" in zoo.MODEL_NAMES:
            return (zoo.get_model("simple_vit", seed=0, num_classes=len(classes)),
                    "simple_vit (random weights, seed 0)", classes)
        torch.manual_seed(0)
        model = VisionTransformer(num_classes=len(classes), **FALLBACK_VIT).eval()
        return model, "torchvision ViT 32 px, patch 4 (random weights, seed 0)", classes
    finally:
        torch.random.set_rng_state(state)


def attention_lesson(block: int = 3, index: int = 0, lang: str = "en",
                     model: tuple[nn.Module, str, tuple[str, ...]] | None = None
                     ) -> AttentionLesson:
    """Run the attention snippet (:data:`CODE` ``["attention"]``) on one shapes test image.

    A forward pre-hook registered ``with_kwargs=True`` rewrites torchvision's
    ``need_weights=False`` call to ``need_weights=True, average_attn_weights=False``; a forward
    hook takes the per-head weights and hands the caller ``(out, None)``, as it asked. Both
    handles are removed in ``finally``. The weights are checked against a computation by hand
    from q and k and against :func:`hooklab.attention`.

    Args:
        block: which encoder block's attention (``encoder_layer_<block>``).
        index: which shapes test image.
        lang: language of the printed lines (``"en"`` or ``"zh"``).
        model: ``(model, description, class names)``; default :func:`attention_model`.

    Raises:
        ValueError: no such block, or an unknown language.
    """
    from hooklab.cam.attention import patch_grid
    from hooklab.data.datasets import shapes_sample, to_display
    from hooklab.recording.attention import capture_attention

    says = _says(lang)
    vit, description, classes = model if model is not None else attention_model()
    encoder_layers = vit.get_submodule("encoder.layers")
    blocks = [n for n, _ in encoder_layers.named_children()]
    if not 0 <= block < len(blocks):
        raise ValueError(f"block must be between 0 and {len(blocks) - 1}, got {block}")
    layer = f"encoder.layers.{blocks[block]}.self_attention"
    image, label, _ = shapes_sample(index, "test")
    x = image[None]
    attn = vit.get_submodule(layer)
    if not isinstance(attn, nn.MultiheadAttention):
        raise ValueError(f"{layer} is a {type(attn).__name__}, not an nn.MultiheadAttention")
    weights: list[torch.Tensor] = []
    queries: list[torch.Tensor] = []
    asked: list[Any] = []
    lines: list[str] = []

    def ask_for_weights(module, args, kwargs):
        asked.append(kwargs.get("need_weights"))
        queries.append(args[0].detach())
        kwargs = {**kwargs, "need_weights": True, "average_attn_weights": False}
        return args, kwargs

    def take_weights(module, args, output):
        out, w = output
        weights.append(w.detach())
        return out, None

    with torch.no_grad():
        plain = vit(x)
        handles = [attn.register_forward_pre_hook(ask_for_weights, with_kwargs=True),
                   attn.register_forward_hook(take_weights)]
        try:
            logits = vit(x)
        finally:
            for h in handles:
                h.remove()
        w = weights[0]
        lines.append(f"{says['caller_passed']}need_weights={asked[0]}")
        lines.append(f"{says['attn_weights']}{tuple(w.shape)}")
        e, heads = int(attn.embed_dim), int(attn.num_heads)
        assert attn.in_proj_weight is not None  # torchvision's packed q, k, v projection
        q, k, _ = F.linear(queries[0], attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q, k = (t.reshape(1, -1, heads, e // heads).transpose(1, 2) for t in (q, k))
        by_hand = torch.softmax(q @ k.transpose(-2, -1) / (e // heads) ** 0.5, dim=-1)
        lines.append(f"{says['by_hand']}{(w - by_hand).abs().max():.1e}")
        library = capture_attention(vit, x, layer)[0].weights[layer]
    grid, extra = patch_grid(vit, x, int(w.shape[-1]))
    maps = w[0, :, 0, extra:].reshape(-1, *grid)
    pred = int(logits.argmax(dim=1))
    return AttentionLesson(
        model=description, layer=layer, image=to_display(image), label=classes[label],
        prediction=classes[pred] if pred < len(classes) else str(pred), asked=asked[0],
        weights=w.float(), by_hand=by_hand.float(), maps=maps.float(), library=library,
        logits=logits, logits_without_hooks=plain, lines=lines)
