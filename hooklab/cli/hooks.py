"""``python -m hooklab hooks``: the hook inventory of a model, and its backward graph as DOT.

Lists every hook registered on a zoo (or registered) model: kind, module, the function and
where it is defined, and whether it looks leaked (no live handle can remove it; see
:mod:`hooklab.recording.inventory`). ``--run-seed-gradcam-twice`` first runs the seed's
``GradCAM`` class twice on (a copy of) the model, to show the four hooks it leaves on conv3.
``--dot FILE`` writes the backward graph of one recorded forward+backward with the recorder's
hooks numbered in firing order (paste into any Graphviz viewer).
"""

from __future__ import annotations

import argparse
import json

import pandas as pd
import torch

from hooklab.charts.graph_dot import graph_dot
from hooklab.cli.common import PathArg, common_options, out
from hooklab.core.edits import EditSpec
from hooklab.core.errors import HooklabError
from hooklab.models import zoo as models
from hooklab.recording.graph import module_graph
from hooklab.recording.inventory import hooks_on
from hooklab.studies.hook_doctor import seed_gradcam_twice

__all__ = ["add_hooks_parser", "cmd_hooks"]

HOOKS_EPILOG = """\
examples:
  python -m hooklab hooks --model simple_cnn                 # a fresh model: no hooks
  python -m hooklab hooks --model simple_cnn --run-seed-gradcam-twice   # 4 leaked on conv3
  python -m hooklab hooks --model simple_cnn --json          # one JSON object per hook
  python -m hooklab hooks --model simple_cnn --dot graph.dot --layers conv1 conv2 conv3 \\
      --edit "conv2=scale(0.5)"                                # backward graph with its hooks
"""

#: Columns printed by default (``--json`` prints every column).
SHOWN = ["module", "target", "kind", "hook_id", "function", "where", "looks_leaked"]


def add_hooks_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "hooks", parents=[common_options()], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="list the hooks on a model (and which look leaked); draw its backward graph",
        description="List every hook registered on a model: forward, pre, backward (full and "
                    "deprecated), backward-pre, state-dict, tensor hooks on parameters and "
                    "post-accumulate-grad hooks, with the function and where it is defined. "
                    "A hook 'looks leaked' when no live handle can remove it.",
        epilog=HOOKS_EPILOG)
    p.add_argument("--model", default="simple_cnn", help="zoo model (default: %(default)s)")
    p.add_argument("--weights", default=None, action=PathArg, kind="weights",
                   help="'shapes' (the shipped SimpleCNN weights), 'random', or a weights file")
    p.add_argument("--run-seed-gradcam-twice", action="store_true",
                   help="first run the seed's GradCAM class twice on the model (it never "
                        "removes its hooks), then list what is left")
    p.add_argument("--layer", default="conv3",
                   help="target layer of --run-seed-gradcam-twice (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="one JSON object per hook")
    p.add_argument("--dot", metavar="FILE", default=None, action=PathArg, kind="output_file",
                   help="write the backward graph (DOT) of one recorded forward+backward")
    p.add_argument("--layers", nargs="+", metavar="LAYER", default=None,
                   help="layers the --dot recording records (default: every leaf)")
    p.add_argument("--edit", action="append", default=[], metavar="LAYER=EDIT",
                   help="gradient edit drawn in the --dot graph, e.g. 'conv2=scale(0.5)'")
    p.add_argument("--seed", type=int, default=0, help="seed of the input (default: 0)")
    p.set_defaults(func=cmd_hooks)


def _model(args: argparse.Namespace) -> torch.nn.Module:
    weights = args.weights
    if weights is None:
        weights = "shapes" if args.model == "simple_cnn" else None
    if weights == "random":
        weights = None
    return models.get_model(args.model, weights=weights)


def _input(model: torch.nn.Module, seed: int) -> torch.Tensor:
    info = getattr(model, "hooklab_info", None)
    shape = tuple(info.input_shape) if info is not None else models.input_shape(model)
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((1, *shape), generator=gen)


def _edits(texts: list[str]) -> list[EditSpec]:
    """``--edit`` texts as edit specs (``EditSpec.parse`` raises a one-line EditError)."""
    return [EditSpec.parse(text) for text in texts]


def _print(inv: pd.DataFrame, name: str, as_json: bool) -> None:
    if as_json:
        for row in inv.to_dict("records"):
            out(json.dumps(row, ensure_ascii=False))
        return
    if inv.empty:
        out(f"no hooks on {name}")
        return
    out(inv[SHOWN].to_string(index=False, max_colwidth=90))
    leaked = int(inv["looks_leaked"].sum())
    out(f"{len(inv)} hook(s) on {name}; {leaked} look leaked"
        + (" (no live handle can remove them: whoever registered them dropped the handle)"
           if leaked else ""))


def cmd_hooks(args: argparse.Namespace) -> int:
    edits = _edits(args.edit) or None  # bad edits fail before any work
    model = _model(args)
    x = _input(model, args.seed)
    if args.run_seed_gradcam_twice:
        if x.dim() != 4:
            raise HooklabError(f"{args.model} does not take images; the seed's GradCAM needs one")
        inv = seed_gradcam_twice(model, x, args.layer)
        name = f"{args.model} after the seed's GradCAM ran twice"
    else:
        inv = hooks_on(model)
        name = args.model
    _print(inv, name, args.json)
    if args.dot:
        graph = module_graph(model, x, args.layers, edits=edits,
                             title=f"{args.model}: backward graph with hooklab's hooks")
        with open(args.dot, "w", encoding="utf-8") as f:
            f.write(graph_dot(graph))
        if not args.json:
            out(f"backward graph: {len(graph.nodes)} nodes, {len(graph.hooks)} hooks -> "
                f"{args.dot}")
    return 0
