"""``python -m hooklab``: record a model's hooks into the trace store and manage stored runs.

The parser is assembled from small ``add_<name>_parser(subparsers)`` functions listed in
:data:`PARSERS`; a new subcommand is one such function plus one entry in that list. Each sets
``func`` (``args -> exit code``) on its parser. Every :class:`~hooklab.core.errors.HooklabError` ends
as one line ``error: <message>`` on stderr and exit code 2, never a traceback.

Example:
    >>> main(["--store", "runs", "record", "--model", "simple_cnn", "--edit", "conv2=halve"])
    0
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import torch

import hooklab
from hooklab.cli.cam import add_cam_parser
from hooklab.cli.common import (
    DEVICE_HELP,
    MODELS_HELP,
    PathArg,
    common_options,
    load_models,
    open_store,
    out,
    resolve_device,
)
from hooklab.cli.evaluate import add_evaluate_parser
from hooklab.cli.hooks import add_hooks_parser
from hooklab.cli.models import add_models_parser
from hooklab.cli.sweep import add_sweep_parser
from hooklab.cli.train import add_train_parser
from hooklab.core.edits import TARGETS, EditSpec
from hooklab.core.errors import EditError, HookKindError, HooklabError
from hooklab.core.hooks import HOOK_KINDS
from hooklab.models import zoo as models
from hooklab.recording.recorder import DEFAULT_MAX_BYTES
from hooklab.store.access import Identity, policy_from_env
from hooklab.store.runs import summarise_edits

EXIT_ERROR = 2

MAIN_EPILOG = """\
examples:
  python -m hooklab record --model simple_cnn --layers conv1 conv2 --edit "conv2=scale(0.5)"
  python -m hooklab cam --method gradcam gradcampp --index 102 --out cam.png
  python -m hooklab train --edit "conv2=scale(0.5)"
  python -m hooklab runs list
  python -m hooklab runs show 20261126-101500-1a2b3c4d
  python -m hooklab runs query --layer conv1 --role grad_output
  python -m hooklab --store /shared/lab-runs runs export 20261126-101500-1a2b3c4d -o run.zip
  python -m hooklab --models mylab.models record --model mynet    # your own registered model

The store is a plain folder: --store PATH, else $HOOKLAB_STORE, else ./hooklab-runs.
Run 'python -m hooklab COMMAND --help' for the options of a command.
"""

RECORD_EPILOG = """\
edits (LAYER=EDIT, or LAYER:TARGET=EDIT to set the target of one edit):
  scale(k)  halve  clip(value)  clip_norm(max_norm)  zero()  channel_mask([0, 3])
  noise(std, seed=0)

examples:
  # the seed's experiment: halve the gradient flowing into conv2's output
  python -m hooklab record --model simple_cnn --layers conv1 conv2 --edit "conv2=scale(0.5)"
  # zero conv1's activation instead, record parameter gradients too
  python -m hooklab record --model simple_cnn --edit "conv1=zero()" --edit-target activation \\
      --param-grads --notes "ablate conv1" --tags ablation,cnn
  # every leaf of resnet18, statistics only (fast), batch of 4
  python -m hooklab record --model resnet18 --stats-only --batch 4
  # explore hook kinds on the seed's SimpleModel (the deprecated one included)
  python -m hooklab record --model simple_model --hook conv=full_backward,backward --target sum
"""

RUNS_EPILOG = """\
examples:
  python -m hooklab runs list --tag halve
  python -m hooklab runs show RUN_ID --events
  python -m hooklab runs update RUN_ID --notes "baseline for the lab meeting" --tags baseline
  python -m hooklab runs export RUN_ID -o run.zip      # share one file
  python -m hooklab runs import run.zip                # validated: bad or tampered zips refused
  python -m hooklab runs delete RUN_ID                 # to the trash; 'runs restore' undoes it
  python -m hooklab runs history RUN_ID                # who changed it, when, what
  python -m hooklab runs audit                         # verify the audit log's chain

Changing a run (update, delete, restore, purge, import) acts as the OS user, or --as NAME|EMAIL.
With --admins or $HOOKLAB_ADMINS (comma-separated e-mails or subjects), or --as, the lab policy
applies: only a run's author (an imported run: its importer) or an admin may change it.
  python -m hooklab runs query --layer conv1 conv2 --role grad_output --column norm max
"""


# -- shared helpers ------------------------------------------------------------------------------
_common = common_options
_store = open_store
_out = out


def _table(df: pd.DataFrame, width: int = 48) -> str:
    if df.empty:
        return "(none)"
    return df.to_string(index=False, max_colwidth=width)


def _summary(events: pd.DataFrame) -> pd.DataFrame:
    """Events grouped by layer and role, in firing order: count, shape, mean L2 norm, stored."""
    if events.empty:
        return pd.DataFrame(columns=["layer", "role", "kind", "events", "shape", "norm", "stored"])
    g = events.groupby(["layer", "role", "kind"], sort=False)
    out = g.agg(first=("seq", "min"), events=("seq", "size"), shape=("shape", "first"),
                norm=("norm", "mean"), stored=("key", lambda k: int((k != "").sum())))
    out = out.sort_values("first").reset_index().drop(columns="first")
    out["layer"] = out["layer"].replace("", "(model)")
    out["norm"] = out["norm"].map(lambda v: f"{v:.4g}")
    return out


# -- record --------------------------------------------------------------------------------------
def add_record_parser(sub: argparse._SubParsersAction) -> None:
    names = ", ".join(getattr(models, "MODEL_NAMES", ("simple_model", "simple_cnn")))
    p = sub.add_parser(
        "record", parents=[_common()], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="run a model forward+backward with hooks and save the trace",
        description="Build a zoo model (random weights unless --weights), feed it a seeded "
                    "random input, record forward outputs and backward gradients of the chosen "
                    "layers (applying any edits), save the trace as a run and print a summary.",
        epilog=RECORD_EPILOG)
    p.add_argument("--model", default="simple_cnn",
                   help=f"zoo model: {names}, or a registered one ('hooklab models' lists "
                        "them) (default: %(default)s)")
    p.add_argument("--layers", nargs="+", metavar="LAYER",
                   help="names, globs ('layer4.*') or types ('Conv2d'); default: every leaf")
    p.add_argument("--edit", action="append", default=[], metavar="LAYER=EDIT[@TARGET]",
                   help="edit to apply, e.g. 'conv2=scale(0.5)' or "
                        "'conv2=zero()@activation'; repeatable")
    p.add_argument("--edit-target", choices=TARGETS, default="grad",
                   help="what the edits change: the layer's output gradient (default), its "
                        "output activation, or its parameters' gradients")
    p.add_argument("--hook", action="append", default=[], metavar="LAYER=KIND[,KIND]",
                   help=f"attach exploration hooks by kind ({', '.join(HOOK_KINDS)}); "
                        "repeatable")
    p.add_argument("--param-grads", action="store_true", help="also record parameter gradients")
    p.add_argument("--input-grads", action="store_true",
                   help="also record gradients w.r.t. each layer's inputs")
    p.add_argument("--stats-only", action="store_true",
                   help="keep statistics only, no tensors (fastest, smallest)")
    p.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, metavar="N",
                   help="tensor byte budget; beyond it only statistics (default: 256 MiB)")
    p.add_argument("--batch", type=int, default=1, metavar="N", help="batch size (default: 1)")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed of the model's random weights and of the input (default: 0)")
    p.add_argument("--target", default=None, metavar="CLASS|sum",
                   help="what to backpropagate: a class index, 'sum' (output.sum()), default "
                        "each sample's predicted class score")
    p.add_argument("--weights", default=None, metavar="PATH", action=PathArg, kind="weights",
                   help="weights file (.safetensors, or a state-dict .pt loaded without pickle "
                        "code) instead of random weights")
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    p.add_argument("--author", default=None, help="who made the run (default: login name)")
    p.add_argument("--notes", default="", help="free text stored with the run")
    p.add_argument("--tags", default="", help="comma-separated labels, e.g. halve,cnn")
    p.add_argument("--no-save", action="store_true", help="print the summary, store nothing")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the run id")
    p.set_defaults(func=cmd_record)


def _parse_hooks(items: Sequence[str]) -> dict[str, list[str]]:
    hooks: dict[str, list[str]] = {}
    for item in items:
        layer, sep, kinds = item.partition("=")
        if not sep or not layer.strip() or not kinds.strip():
            raise HookKindError(
                f"write a hook as LAYER=KIND[,KIND], e.g. conv=forward; got {item!r}")
        hooks.setdefault(layer.strip(), []).extend(k.strip() for k in kinds.split(",") if k.strip())
    return hooks


def _parse_target(text: str | None) -> Any:
    if text is None or text == "sum":
        return text
    try:
        return int(text)
    except ValueError:
        raise EditError(f"--target is a class index or 'sum', got {text!r}") from None


def cmd_record(args: argparse.Namespace) -> int:
    if args.batch < 1 or args.max_bytes < 0:
        raise HooklabError("--batch must be >= 1 and --max-bytes >= 0")
    specs = [EditSpec.parse(e, target=args.edit_target) for e in args.edit]
    hooks = _parse_hooks(args.hook)
    target = _parse_target(args.target)
    store = None if args.no_save else _store(args, write=True)  # fails before the work
    device = resolve_device(args.device)
    model = models.get_model(args.model, seed=args.seed, weights=args.weights)
    info = getattr(model, "hooklab_info", None)
    shape = tuple(info.input_shape) if info is not None else models.input_shape(model)
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch, *shape, generator=gen).to(device)
    model.to(device)
    meta = {"model": getattr(info, "name", args.model), "page": "cli",
            "input": f"randn({', '.join(map(str, (args.batch, *shape)))}) seed={args.seed}",
            "seed": args.seed, "target": args.target if args.target is not None else "predicted",
            "weights": args.weights or getattr(info, "weights", None)
            or f"random(seed={args.seed})", "device": str(device)}
    try:
        with hooklab.record(model, args.layers, edits=specs, hooks=hooks or None,
                            param_grads=args.param_grads, input_grads=args.input_grads,
                            keep_tensors=not args.stats_only, max_bytes=args.max_bytes,
                            meta=meta) as rec:
            out = rec.run(x, target=target)
    except (ValueError, TypeError) as exc:  # e.g. a target class out of range
        if isinstance(exc, HooklabError):
            raise
        raise HooklabError(f"recording failed: {exc}") from exc
    trace = rec.trace
    if out.dim() == 2:
        trace.meta["prediction"] = out.argmax(dim=1).tolist()
    rid = None
    if store is not None:
        rid = store.save(trace, author=args.author, notes=args.notes, tags=args.tags)
    if args.quiet:
        if rid:
            _out(rid)
        return 0
    where = (f"saved run {rid} in {store.root}" if store is not None and rid
             else "not saved (--no-save)")
    _out(f"{where}\n{args.model}, input {meta['input']}, {len(trace)} events, "
         f"{trace.stored_bytes / 2**20:.2f} MiB of tensors"
         + (" (budget reached: statistics only beyond it)" if trace.truncated else ""))
    _out(_table(_summary(trace.events)))
    return 0


# -- runs ----------------------------------------------------------------------------------------
def add_runs_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", parents=[_common()],
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="list, show, query, export, import, delete and restore stored runs",
                       description="Manage the runs in the trace store.", epilog=RUNS_EPILOG)
    rs = p.add_subparsers(dest="runs_command", metavar="ACTION")
    p.set_defaults(func=lambda args: _usage(p))
    common = [_common()]
    acting = argparse.ArgumentParser(add_help=False)
    acting.add_argument("--as", dest="acting_as", metavar="WHO",
                        help="act as this member (a name, subject or e-mail; default: the OS "
                             "user); turns the lab policy on")
    acting.add_argument("--admins", metavar="LIST",
                        help="lab admins, comma-separated e-mails or subjects (default: "
                             "$HOOKLAB_ADMINS); turns the lab policy on")
    changing = [_common(), acting]

    q = rs.add_parser("list", parents=common, help="one line per run, newest first")
    q.add_argument("--author", help="only this author's runs")
    q.add_argument("--tag", help="only runs with this tag")
    q.add_argument("--model", help="only runs of this model")
    q.set_defaults(func=cmd_runs_list)

    q = rs.add_parser("show", parents=common, help="a run's manifest and event summary")
    q.add_argument("run_id")
    q.add_argument("--events", action="store_true", help="print every event")
    q.add_argument("--json", action="store_true", help="print the manifest as JSON only")
    q.set_defaults(func=cmd_runs_show)

    q = rs.add_parser("query", parents=common,
                      help="event rows across all runs (e.g. every grad norm of a layer)")
    q.add_argument("--layer", nargs="+", help="layer name(s)")
    q.add_argument("--role", nargs="+",
                   help="input, output, grad_output, grad_input, param_grad, edited")
    q.add_argument("--kind", nargs="+", help="hook kind(s), e.g. forward tensor")
    q.add_argument("--column", nargs="+", default=["norm"],
                   help="statistic column(s) (default: norm; also mean std min max zero_frac "
                        "nan_count inf_count)")
    q.add_argument("--run", nargs="+", dest="runs", metavar="RUN_ID", help="only these runs")
    q.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    q.set_defaults(func=cmd_runs_query)

    q = rs.add_parser("update", parents=changing, help="change a run's notes and/or tags")
    q.add_argument("run_id")
    q.add_argument("--notes")
    q.add_argument("--tags", help="comma-separated; replaces the run's tags ('' clears them)")
    q.set_defaults(func=cmd_runs_update)

    q = rs.add_parser("export", parents=common, help="write a run to one .zip file")
    q.add_argument("run_id")
    q.add_argument("-o", "--output", metavar="FILE", action=PathArg, kind="output_file_or_dir",
                   help="zip path or folder (default: ./RUN_ID.zip)")
    q.set_defaults(func=cmd_runs_export)

    q = rs.add_parser("import", parents=changing, help="add a run from an exported .zip (validated)")
    q.add_argument("file", action=PathArg, kind="input_file")
    q.set_defaults(func=cmd_runs_import)

    q = rs.add_parser("delete", parents=changing, help="move runs to the trash")
    q.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    q.set_defaults(func=cmd_runs_delete)

    q = rs.add_parser("restore", parents=changing, help="bring runs back from the trash")
    q.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    q.set_defaults(func=cmd_runs_restore)

    q = rs.add_parser("trash", parents=common, help="list the runs in the trash")
    q.set_defaults(func=cmd_runs_trash)

    q = rs.add_parser("purge", parents=changing, help="delete trashed runs for good")
    q.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="default: the whole trash")
    q.add_argument("--older-than-days", type=float, metavar="DAYS",
                   help="only runs deleted more than DAYS ago")
    q.add_argument("--yes", action="store_true", help="required: this cannot be undone")
    q.set_defaults(func=cmd_runs_purge)

    q = rs.add_parser("history", parents=common, help="the audit log's lines about a run")
    q.add_argument("run_id")
    q.set_defaults(func=cmd_runs_history)

    q = rs.add_parser("audit", parents=common,
                      help="verify the audit log's chain (exit 2 when a line was tampered with)")
    q.set_defaults(func=cmd_runs_audit)


def _changing_store(args: argparse.Namespace):
    """The store with the lab policy of ``--admins`` / ``$HOOKLAB_ADMINS`` / ``--as``, and the
    acting identity (``--as``, else the OS user)."""
    store = _store(args, write=True)
    store.policy = policy_from_env(args.admins, args.acting_as)
    return store, Identity.local(args.acting_as) if args.acting_as else Identity.local()


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_ERROR


def cmd_runs_list(args: argparse.Namespace) -> int:
    store = _store(args)
    df = store.list(author=args.author, tag=args.tag, model=args.model)
    if df.empty:
        _out(f"no runs in {store.root}")
        return 0
    df = df.assign(created=df["created"].str.slice(0, 19).str.replace("T", " "))
    _out(_table(df[["run_id", "created", "author", "model", "edits", "tags", "n_events",
                    "notes", "status"]], width=40))
    return 0


def cmd_runs_show(args: argparse.Namespace) -> int:
    store = _store(args)
    m = store.manifest(args.run_id)
    if args.json:
        _out(json.dumps(m, indent=2, ensure_ascii=False))
        return 0
    meta = m["meta"]
    lines = [f"run       {m['run_id']}", f"created   {m['created']}", f"author    {m['author']}",
             f"tags      {', '.join(m['tags'])}", f"notes     {m['notes']}",
             f"model     {meta.get('model', '')}", f"input     {meta.get('input', '')}"]
    lines.append(f"edits     {summarise_edits(meta.get('edits')) or '(none)'}")
    lines.append(f"layers    {', '.join(map(str, meta.get('layers', [])))}")
    lines.append(f"events    {m['n_events']}, tensors {m['n_tensors']}, "
                 f"{m['files']['tensors.safetensors']['bytes'] / 2**20:.2f} MiB"
                 + (" (budget reached)" if meta.get("truncated") else ""))
    lines.append("versions  " + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()))
    if "imported_from" in m:
        lines.append(f"imported  from run {m['imported_from']}")
    _out("\n".join(lines))
    events = store.events(args.run_id)
    _out("")
    if args.events:
        _out(_table(events[["seq", "step", "phase", "kind", "layer", "call", "role", "index",
                            "shape", "mean", "std", "norm", "nan_count", "inf_count", "key"]]))
    else:
        _out(_table(_summary(events)))
    return 0


def cmd_runs_query(args: argparse.Namespace) -> int:
    df = _store(args).query(layer=args.layer, role=args.role, column=args.column,
                            kinds=args.kind, run_ids=args.runs)
    if args.csv:
        sys.stdout.write(df.to_csv(index=False))
        return 0
    if df.empty:
        _out("no matching events")
        return 0
    cols = ["run_id", "step", "layer", "call", "role", "kind", "index", "edit"] + [
        c for c in args.column if c not in ("step", "layer", "call", "role", "kind", "index")]
    _out(_table(df[cols]))
    return 0


def cmd_runs_update(args: argparse.Namespace) -> int:
    if args.notes is None and args.tags is None:
        raise HooklabError("give --notes and/or --tags")
    store, who = _changing_store(args)
    m = store.update(args.run_id, notes=args.notes, tags=args.tags, by=who)
    _out(f"updated {m['run_id']}: tags [{', '.join(m['tags'])}], notes {m['notes']!r}")
    return 0


def cmd_runs_export(args: argparse.Namespace) -> int:
    _out(str(_store(args).export(args.run_id, args.output)))
    return 0


def cmd_runs_import(args: argparse.Namespace) -> int:
    store, who = _changing_store(args)
    rid = store.import_(args.file, by=who if args.acting_as else None)
    m = store.manifest(rid)
    note = f" (id {m['imported_from']} was taken here)" if "imported_from" in m else ""
    _out(f"imported run {rid}{note}")
    return 0


def cmd_runs_delete(args: argparse.Namespace) -> int:
    store, who = _changing_store(args)
    for rid in args.run_ids:
        store.delete(rid, by=who)
        _out(f"moved {rid} to the trash ('runs restore {rid}' brings it back)")
    return 0


def cmd_runs_restore(args: argparse.Namespace) -> int:
    store, who = _changing_store(args)
    for rid in args.run_ids:
        store.restore(rid, by=who)
        _out(f"restored {rid}")
    return 0


def cmd_runs_trash(args: argparse.Namespace) -> int:
    store = _store(args)
    df = store.trash_list()
    if df.empty:
        _out("the trash is empty")
        return 0
    _out(_table(df[["run_id", "deleted", "author", "model", "notes", "status"]], width=40))
    return 0


def cmd_runs_purge(args: argparse.Namespace) -> int:
    if not args.yes:
        raise HooklabError("purging deletes runs for good; add --yes to confirm")
    store, who = _changing_store(args)
    older = None if args.older_than_days is None else args.older_than_days * 86400
    purged = []
    if args.run_ids:
        for rid in args.run_ids:
            purged += store.purge(rid, older_than=older, by=who)
    else:
        purged = store.purge(older_than=older, by=who)
    _out(f"purged {len(purged)} run(s)" + (": " + ", ".join(purged) if purged else ""))
    return 0


def cmd_runs_history(args: argparse.Namespace) -> int:
    store = _store(args)
    hist = store.history(args.run_id)
    if not hist:
        _out(f"no audit lines about {args.run_id}")
        return 0
    for e in hist:
        who = Identity.from_dict(e.get("who"))
        change = "; ".join(f"{k}: {e['before'].get(k)!r} -> {v!r}"
                           for k, v in e.get("after", {}).items()) if "before" in e else ""
        _out(f"{e['seq']:>6}  {e['time'][:19].replace('T', ' ')}  "
             f"{who.label if who else '?':<28}  {e['action']:<8} {change}")
    report = store.verify_audit()
    if not report.ok:
        _out(f"warning: the audit log has {len(report.problems)} problem(s); "
             "run 'hooklab runs audit'")
    return 0


def cmd_runs_audit(args: argparse.Namespace) -> int:
    report = _store(args).verify_audit()
    for note in report.notes:
        _out(f"note: {note}")
    for problem in report.problems:
        _out(f"problem: {problem}")
    _out(f"{report.entries} line(s), head {report.head}"
         + ("" if report.ok else f", {len(report.problems)} problem(s)"))
    return 0 if report.ok else EXIT_ERROR


# -- main ----------------------------------------------------------------------------------------
#: One function per subcommand; each adds its parser and sets ``func``. Add new ones here.
PARSERS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_record_parser, add_cam_parser, add_train_parser, add_runs_parser, add_hooks_parser,
    add_models_parser, add_evaluate_parser, add_sweep_parser]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hooklab", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="hooklab: see what PyTorch hooks do. Record forward activations and "
                    "backward gradients of a model, edit gradients, and keep every run in a "
                    "shared trace store.",
        epilog=MAIN_EPILOG)
    parser.add_argument("--store", metavar="PATH", default=None, action=PathArg, kind="store",
                        help="store folder (default: $HOOKLAB_STORE, else ./hooklab-runs)")
    parser.add_argument("--models", metavar="MODULES", action="append", default=None,
                        help=MODELS_HELP)
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log progress to stderr (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in PARSERS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 usage or hooklab error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)  # path arguments are checked here, before any work
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed by argparse
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    except HooklabError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG if args.verbose > 1 else logging.INFO,
                            format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if getattr(args, "func", None) is None:
        parser.print_help()  # no command: show what there is
        return 0
    load_models(args)  # $HOOKLAB_MODELS and --models: a failure is a warning line
    try:
        return int(args.func(args) or 0)
    except HooklabError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `python -m hooklab runs list | head`
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the final flush
        except OSError:
            pass
        return 0
    except OSError as exc:  # a file system refusal no check foresaw: still one line
        print(f"error: {_one_line(_os_message(exc))}", file=sys.stderr)
        return EXIT_ERROR


def _os_message(exc: OSError) -> str:
    """``/x/y.png: Permission denied`` from an OSError (its file name first, when it has one)."""
    what = exc.strerror or str(exc) or type(exc).__name__
    return f"{exc.filename}: {what}" if exc.filename else what


def _one_line(exc: BaseException | str) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
