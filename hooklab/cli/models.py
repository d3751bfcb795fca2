"""``python -m hooklab models``: the zoo and the registered models, with their input shapes."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from hooklab.cli.common import MODELS_HELP, out
from hooklab.core.errors import HooklabError
from hooklab.models import registry, zoo

MODELS_EPILOG = """\
examples:
  python -m hooklab models
  python -m hooklab --models mylab.models models          # your lab's models too
  HOOKLAB_MODELS=mylab.models python -m hooklab models
"""

COLUMNS = ["name", "from", "input", "classes", "weights", "description"]


def add_models_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="list the zoo and the registered models with their input shapes",
                       description="One line per model any command accepts as --model: the "
                                   "zoo, then the models registered by $HOOKLAB_MODELS, "
                                   "--models and installed packages (entry points "
                                   f"'{registry.ENTRY_POINT_GROUP}').",
                       epilog=MODELS_EPILOG)
    p.add_argument("--models", metavar="MODULES", dest="models_after", action="append",
                   default=argparse.SUPPRESS, help=MODELS_HELP)
    p.set_defaults(func=cmd_models)


def model_table() -> pd.DataFrame:
    """The rows ``hooklab models`` prints (no model is built)."""
    rows = []
    for name in zoo.MODEL_NAMES:
        try:
            info = zoo.model_info(name)
            classes, shape = str(info.num_classes), info.input_shape
        except (HooklabError, ImportError, KeyError):  # torchvision's metadata unavailable
            classes, shape = "?", (3, 224, 224)
        rows.append({"name": name, "from": "zoo", "input": "x".join(map(str, shape)),
                     "classes": classes, "weights": "shapes (shipped)" if name == "simple_cnn"
                     else "random", "description": ""})
    for item in registry.registered():
        rows.append({"name": item.name, "from": item.module,
                     "input": "x".join(map(str, item.input_shape)),
                     "classes": str(len(item.class_names)) if item.class_names else "?",
                     "weights": Path(item.weights).name if item.weights else "random",
                     "description": item.description})
    return pd.DataFrame(rows, columns=COLUMNS)


def cmd_models(args: argparse.Namespace) -> int:
    out(model_table().to_string(index=False, max_colwidth=60))
    errors = registry.load_errors()
    if errors:
        out(f"\n{len(errors)} model module(s) failed to load (see the warnings above)")
    return 0
