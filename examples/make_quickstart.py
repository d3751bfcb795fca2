"""Write examples/quickstart.ipynb (outputs stripped) from the cells below.

The notebook is the artefact; this script keeps it reviewable as plain Python and stable
(fixed cell ids, no outputs). Run it after editing a cell; ``--check`` exits 1 when the
committed notebook differs from what the script writes (tests/test_notebooks.py checks the same).

    python examples/make_quickstart.py            # rewrite examples/quickstart.ipynb
    python examples/make_quickstart.py --check    # is the committed notebook up to date?

Cells tagged ``check-...`` print lines that tests/test_notebooks.py compares with what the
library computes in the test process.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

PATH = Path(__file__).with_name("quickstart.ipynb")

# (kind, source, tag or "") in order; kind is "md" or "code".
CELLS: list[tuple[str, str, str]] = [
    ("md", """\
# hooklab quickstart

hooklab records what PyTorch hooks see, so you can *look* at it: the seed lesson's three hooks,
a Grad-CAM, and a training loop of your own. Everything runs offline on a laptop CPU in well under
a minute (the data set is generated, the trained weights ship with hooklab).

快速入门：用 hooklab 观察钩子、Grad-CAM 和你自己的训练循环（离线运行，一分钟以内）。""", ""),
    ("code", """\
import tempfile

import torch

import hooklab
from hooklab.charts import basics
from hooklab.charts import cam as cam_charts
from hooklab.core import edits
from hooklab.models.zoo import seed_model
from hooklab.studies import lessons

hooklab.__version__""", ""),
    ("md", """\
## 1. A forward hook sees a layer's input and output

The lesson's `SimpleModel` (conv 1→2, 3×3 → ReLU → linear 32→10) with `torch.manual_seed(42)` and
`x = torch.randn(1, 1, 4, 4)`. A forward hook on `conv` prints the shapes it receives and keeps
`output.detach()`; the handle is removed in `finally`. The figure is the lesson's three panels:
the input and the two output channels.

前向钩子：看到卷积层的输入 (1, 1, 4, 4) 和输出 (1, 2, 4, 4)。""", ""),
    ("code", """\
fwd = lessons.forward_hook_lesson()
print("\\n".join(fwd.lines))
print("hook calls:", fwd.calls)
basics.forward_panels(fwd.input_map, fwd.channel_maps)""", "check-forward"),
    ("md", """\
`hooklab.record` does the same for any set of layers and keeps every firing as an event (one row
per hook call, with statistics and the stored tensor). A `Trace` displays itself as a short
summary; `trace.plot(...)` draws the dashboard's own figures.""", ""),
    ("code", """\
model = seed_model(42).eval()           # the lesson's model, same weights
x = fwd.input                           # the lesson's input
with hooklab.record(model, layers="conv") as rec:
    model(x)
forward_trace = rec.trace
print("recorded conv output == the lesson's:",
      torch.equal(forward_trace.find(layer="conv", role="output"), fwd.output))
forward_trace""", "check-forward-trace"),
    ("code", """\
forward_trace.plot("channels", layer="conv")""", ""),
    ("md", """\
## 2. Backward hooks: what each kind receives

The lesson registers the deprecated `register_backward_hook` on the conv and prints the number of
`grad_input` and `grad_output` entries (3 and 1: for a conv, the gradients of input, weight and
bias). `register_full_backward_hook` gives the gradient of the module's *input* only. Every entry
is compared with `torch.autograd.grad` on the same graph.

反向钩子：不同类型的钩子收到什么梯度（与 autograd 对比）。""", ""),
    ("code", """\
bwd = lessons.backward_hook_lesson()
for kind, got in bwd.kinds.items():
    print(f"{kind:18s} grad_input: {len(got.grad_input)}  grad_output: {len(got.grad_output)}")
basics.backward_kinds_table(bwd.table())""", "check-backward"),
    ("md", """\
Why the deprecated hook is deprecated: in a module that runs several operations it sees only the
last one. For `x * 2 + 1` its `grad_input` is the gradient of the addition, `[1, 1]`; the true
`dL/dx` is `[2, 2]`.""", ""),
    ("code", """\
demo = bwd.multi_op[0]
print(demo.name, demo.code)
print("deprecated:", demo.deprecated.tolist(), " full:", demo.full.tolist(),
      " autograd:", demo.reference.tolist())
basics.multi_op_bars(demo.deprecated, demo.full, demo.reference)""", "check-multi-op"),
    ("md", """\
hooklab's recorder captures gradients with a tensor hook on each layer's output (safe with
in-place operations). One forward and backward pass, every layer, every parameter gradient; the
timeline shows the forward firings, then the backward ones in reverse layer order.""", ""),
    ("code", """\
with hooklab.record(model, param_grads=True) as plain:
    plain.run(x)                        # forward, then backward of the predicted class score
plain.trace""", ""),
    ("code", """\
plain.trace.plot()""", ""),
    ("md", """\
## 3. A tensor hook that halves a gradient, and its effect upstream

`x = 2`, `y = x²`, `z = y³`. A hook on `y` receives `dz/dy = 3y² = 48` and returns `grad / 2`;
the chain rule carries the factor upstream, so `x.grad` is `48 · 0.5 · 2x = 96` instead of 192.

张量钩子把梯度减半：上游的 x.grad 也随之减半（96 而不是 192）。""", ""),
    ("code", """\
half = lessons.tensor_hook_lesson(k=0.5)
print("\\n".join(half.lines))
print(half.chain_rule)
print(f"halving ratio: {half.x_grad / half.x_grad_without_hook:g}")
basics.tensor_hook_bars(half.dz_dy, half.k, half.dy_dx, half.x_grad, half.x_grad_without_hook)""",
     "check-tensor"),
    ("md", """\
The same edit on a real layer: `edits={"conv": edits.scale(0.5)}` halves the gradient arriving
at the conv output. The trace keeps both sides (`grad_output` before, `edited` after), and the
conv's weight gradient, computed from the edited gradient, is halved too.""", ""),
    ("code", """\
with hooklab.record(model, edits={"conv": edits.scale(0.5)}, param_grads=True) as halved:
    halved.run(x)
before = halved.trace.find(layer="conv", role="grad_output")
after = halved.trace.find(layer="conv", role="edited")
w_plain = plain.trace.find(layer="conv", role="param_grad", index="weight")
w_half = halved.trace.find(layer="conv", role="param_grad", index="weight")
print(f"edited / before at conv: {(after.norm() / before.norm()).item():.4f}")
print(f"conv.weight.grad, edited / plain: {(w_half.norm() / w_plain.norm()).item():.4f}")
halved.trace""", "check-edit"),
    ("md", """\
## 4. Grad-CAM on the shipped shapes model

The lesson's `SimpleCNN`, trained on hooklab's generated *shapes* data set (32×32, six classes,
known object masks) — the weights ship with hooklab, so the numbers are the same on every
machine. Grad-CAM at `conv3`: weights = mean gradient over H×W, map = ReLU(Σ weights ·
activations), resized to 32×32. The figure is the lesson's: original, jet heatmap, overlay
`0.4 · jet + 0.6 · image`. The last line is the share of the map that falls on the object.

Grad-CAM：模型在看哪里（热力图与叠加图）。""", ""),
    ("code", """\
from hooklab.cam import engine
from hooklab.data.datasets import shapes_sample, to_display
from hooklab.models.zoo import get_model

cnn = get_model("simple_cnn", weights="shapes")
names = cnn.hooklab_info.class_names
image, label, mask = shapes_sample(7, split="test")
res = engine.compute(cnn, image, "gradcam", layer="conv3")
cam = res.maps[0]
print(f"label: {names[label]}  predicted: {names[int(res.targets[0])]}")
print(f"CAM share on the object: {(cam * mask).sum().item() / cam.sum().item():.3f}")
cam_charts.three_panels(to_display(image), cam.numpy())""", "check-cam"),
    ("md", """\
## 5. Watch your own training loop

`hooklab.watch` records a training loop you wrote yourself: statistics of every chosen layer's
output and output gradient, parameter gradients and the update ratio ‖Δw‖/‖w‖, every `every`
steps, streamed into a run of a `TraceStore` while the loop runs (the dashboard's Training page
shows it live). Call `w.step(...)` after `optimizer.step()`, with any scalars you want curves of.
Here: a short training of the lesson's `SimpleCNN` on the shapes set, into a temporary store.

记录你自己的训练循环：每一步的梯度范数、更新比例和损失曲线。""", ""),
    ("code", """\
import torch.nn.functional as F

from hooklab.data.datasets import make_shapes
from hooklab.models.zoo import SimpleCNN
from hooklab.store.stream import open_watch

store = hooklab.TraceStore(tempfile.mkdtemp(prefix="hooklab-quickstart-"))
train = make_shapes(256, seed=0)


def train_watched(edits=None, steps=12, batch=16):
    \"\"\"A plain training loop, watched; the same seed and batches for every call.\"\"\"
    torch.manual_seed(0)
    model = SimpleCNN(num_classes=len(train.classes)).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    with hooklab.watch(model, store, every=1, layers="Conv2d", edits=edits,
                       tags=["quickstart"]) as w:
        for step in range(steps):
            idx = order.roll(-step * batch)[:batch]
            x, y = train.images[idx], train.labels[idx]
            opt.zero_grad()
            out = model(x)
            loss = F.cross_entropy(out, y)
            loss.backward()
            opt.step()
            w.step(loss=loss.item(), acc=(out.argmax(1) == y).float().mean().item())
    return open_watch(store, w.run_id)


run = train_watched()
print("store:", store.root)
print("run:", run.run_id)
run""", "check-watch"),
    ("code", """\
run.plot()                    # output-gradient norm per layer and step (log colour)""", ""),
    ("code", """\
run.plot("scalars")           # the loss and accuracy passed to w.step""", ""),
    ("md", """\
The lesson's halving over a real training: the same loop with `conv2`'s output gradient halved.
At step 0 (same seed, same weights, same batch) every gradient upstream of `conv2` is exactly
half of the plain run's — the chain rule of section 3 — and after that the two trainings drift
apart. `plot("ratio", baseline=run)` draws this run's norms over the plain run's.

同一训练中把 conv2 的梯度减半：第 0 步上游梯度恰好减半，之后两次训练逐渐不同。""", ""),
    ("code", """\
halved = train_watched(edits={"conv2": edits.scale(0.5)})
ev_plain, ev_half = run.events, halved.events


def norm_at(events, layer, role="grad_output", step=0):
    rows = events[(events.layer == layer) & (events.role == role) & (events.step == step)]
    return float(rows.norm.iloc[0])


print("run:", halved.run_id)
for layer in ("conv1", "conv2", "conv3"):
    ratio = norm_at(ev_half, layer) / norm_at(ev_plain, layer)
    print(f"step 0, {layer} output-gradient norm, halved / plain: {ratio:.4f}")
halved.plot("ratio", baseline=run)""", "check-watch-ratio"),
    ("md", """\
## Next

- Open these two runs in the dashboard's **Training** page (live runs refresh themselves):
  `HOOKLAB_STORE=<the store printed above> make run`, then choose a run and compare it with the
  other one.
- `run.plot(kind)` kinds: `heatmap` (`role="grad_output"`, `"param_grad"` or `"output"`),
  `scalars`, `update_ratio`, `dead`, `ratio` (`baseline=`); a `Trace`'s: `timeline`,
  `channels`, `histogram`, `pair` (`layer=...`).
- Watch your own model: `with hooklab.watch(model, store, every=10) as w: ... w.step(loss=...)`.

下一步：在仪表盘的“训练”页面打开这些运行。""", ""),
]


def build() -> nbformat.NotebookNode:
    """The notebook, outputs empty, with stable cell ids."""
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, (kind, source, tag) in enumerate(CELLS):
        cell = new_markdown_cell(source) if kind == "md" else new_code_cell(source)
        cell["id"] = f"{tag or kind}-{i:02d}"
        if tag:
            cell.metadata["tags"] = [tag]
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def text() -> str:
    """The notebook file's text."""
    return nbformat.writes(build()) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the committed notebook differs")
    args = parser.parse_args(argv)
    if args.check:
        same = PATH.exists() and PATH.read_text(encoding="utf-8") == text()
        sys.stderr.write(f"{PATH.name}: {'up to date' if same else 'OUT OF DATE'}\n")
        return 0 if same else 1
    PATH.write_text(text(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
