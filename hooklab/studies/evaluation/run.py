"""``hooklab.evaluate``: CAM methods scored over a whole data set, in-process or on Ray.

Example:
    >>> res = hooklab.evaluate("simple_cnn", "shapes", n=200, methods=["gradcam", "gradcam++"],
    ...                        metrics=["deletion", "insertion", "pointing"], store="runs")
    >>> res.summary                     # mean ± sd per method × layer × metric
    >>> res.per_image.head()            # one row per image × method × layer
    >>> hooklab.evaluate(..., ray="local", workers=2)   # the same numbers, on a local Ray
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pandas as pd
from torch import nn

from hooklab.cam import engine
from hooklab.core.layers import resolve_layers
from hooklab.models import zoo
from hooklab.store import format as fmt
from hooklab.store.runs import TraceStore, _versions
from hooklab.store.stream import run_status
from hooklab.studies import cluster
from hooklab.studies.evaluation.results import (
    PAGE,
    EvaluationResult,
    EvaluationWriter,
    is_evaluation,
    read_evaluation,
    summarise,
)
from hooklab.studies.evaluation.scorer import Scorer, source_for
from hooklab.studies.evaluation.spec import (
    DEFAULT_METRICS,
    TARGETS,
    EvalSpec,
    EvaluationError,
    chunks,
    method_names,
    metric_names,
    run_id_for,
)

__all__ = ["evaluate"]

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


def _default_weights(name: str) -> str:
    key = name.strip().lower().replace("-", "_")
    return "shapes" if (key, "shapes") in zoo.SHIPPED_WEIGHTS else ""


def _model_hash(model: nn.Module) -> str:
    h = hashlib.sha256(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _layers(model: nn.Module, layers: Any, shape: tuple[int, ...]) -> tuple[str, ...]:
    if layers is None:
        return (zoo.auto_target_layer(model, shape),)
    items = [layers] if isinstance(layers, (str, type, nn.Module)) else list(layers)
    out: list[str] = []
    for item in items:
        for name in resolve_layers(model, [item]):  # LayerNotFoundError, close names listed
            if name not in out:
                out.append(name)
    return tuple(out)


def _metrics(metrics: Sequence[str] | str | None, has_masks: bool, data: str
             ) -> tuple[tuple[str, ...], list[str]]:
    notes: list[str] = []
    if metrics is None:
        names = metric_names(DEFAULT_METRICS)
        if not has_masks:
            names = tuple(m for m in names if m != "pointing")
            notes.append(f"pointing game left out: {data} has no object masks")
        return names, notes
    names = metric_names(metrics)
    if "pointing" in names and not has_masks:
        raise EvaluationError(f"the pointing game needs object masks and {data} has none "
                              "(shapes and biased_shapes have them); drop 'pointing'")
    return names, notes


def _open_writer(store: TraceStore, run_id: str, spec: EvalSpec, resume: bool,
                 meta: dict[str, Any], author: str | None, tags: list[str]
                 ) -> tuple[EvaluationWriter | None, EvaluationResult | None]:
    """A writer for the run (new or reopened), or the finished run's result."""
    if resume and store.exists(run_id):
        manifest = store.manifest(run_id)
        if not is_evaluation(manifest) or manifest["meta"].get("evaluation") != spec.to_dict():
            raise EvaluationError(f"run {run_id} in {store.root} is not this evaluation")
        status = run_status(manifest)
        if status == "finished":
            return None, read_evaluation(store, run_id)
        if status == "live":
            writer = manifest["writer"]
            raise EvaluationError(f"run {run_id} is being written now (process {writer['pid']} "
                                  f"on {writer['host']}); wait for it or stop it first")
        log.info("resuming evaluation run %s (%s)", run_id, status)
        return EvaluationWriter.reopen(store, manifest), None
    if store.is_taken(run_id):
        raise EvaluationError(f"run {run_id} is in the trash of {store.root}; restore or "
                              "purge it, or pass resume=False")
    writer = EvaluationWriter(store, run_id, author=author, tags=tags, versions=_versions())
    writer.open(meta)
    return writer, None


def evaluate(model: str | nn.Module, data: str = "shapes", *,
             methods: Sequence[str] | str = ("gradcam",), layers: Any = None,
             metrics: Sequence[str] | str | None = None, n: int | None = None,
             split: str = "test", batch_size: int = 32, seed: int = 0,
             store: TraceStore | str | os.PathLike[str] | None = None, ray: str | None = None,
             workers: int | None = None, resume: bool = True, progress: Progress | None = None,
             weights: str | None = None, target: str = "predicted", steps: int = 32,
             threads: int = 1, author: str | None = None, tags: Iterable[str] = (),
             ray_timeout: float = 20.0, _fault: str | None = None) -> EvaluationResult:
    """Score CAM methods over a data set; results per image into the store as one run.

    Args:
        model: a zoo or registered model name (``simple_cnn`` gets its shipped shapes weights
            unless ``weights`` says otherwise), or a model object.
        data: a :mod:`hooklab.data.sources` name: ``shapes``, ``biased_shapes``,
            ``cifar10[:ROOT]``, ``imagefolder:PATH``.
        methods: CAM methods (any spelling of :data:`hooklab.cam.METHODS`).
        layers: target layers (each mapped on its own); ``None``: the automatic layer.
        metrics: of :data:`~hooklab.studies.evaluation.spec.METRICS`: ``pointing``, ``ad_ic``,
            ``deletion``, ``insertion``, ``road``. Default: all but ROAD (the pointing game
            only where the data has masks; left out with a note otherwise).
        n: the first ``n`` images (default: the whole data set; shapes: 1000).
        split: the data set's split.
        batch_size: images per chunk (the unit of work, storage and resumption).
        seed: the shapes generator's seed and the metrics' (deletion ties, ROAD noise).
        store: a :class:`~hooklab.TraceStore` or its folder (default ``$HOOKLAB_STORE``).
        ray: ``"local"`` (a Ray started here with this machine's CPUs), a cluster address, or
            ``None``: ``$HOOKLAB_RAY_ADDRESS`` if set, else in-process.
        workers: Ray actors (default: the cluster's CPUs).
        resume: find the run of the same arguments and finish it (skipping the images it
            holds; a finished run is returned as stored). ``False``: always a new run.
        progress: called ``progress(images_done, images_total)`` after each chunk (and once at
            the start); an exception it raises stops the evaluation (the run stays
            unfinished and a re-run resumes it).
        weights: the model's ``weights=`` (:func:`hooklab.models.zoo.get_model`).
        target: ``"predicted"`` (each image's predicted class) or ``"label"``.
        steps: deletion / insertion steps.
        threads: torch threads per scorer (pinned during each chunk, so the in-process and the
            Ray paths round alike).
        author, tags: as in :meth:`TraceStore.save`.
        ray_timeout: seconds a cluster address may take to answer.

    Returns:
        :class:`~hooklab.studies.evaluation.results.EvaluationResult` (``run_id``,
        ``per_image``, ``summary``).

    Raises:
        DataError: a bad data set (e.g. a path that is not an ImageFolder).
        CamError / LayerNotFoundError / NonSpatialLayerError: a bad method or layer.
        EvaluationError: a bad metric or setting, a run being written by another process.
        ClusterError: Ray is missing or the cluster does not answer (within ``ray_timeout``).
        Nothing is stored for any of these.
    """
    if target not in TARGETS:
        raise EvaluationError(f"target must be one of {', '.join(TARGETS)}, not {target!r}")
    for name, value in (("batch_size", batch_size), ("steps", steps), ("threads", threads)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise EvaluationError(f"{name} must be a positive integer, got {value!r}")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise EvaluationError(f"workers must be a positive integer, got {workers!r}")
    method_list = method_names(methods)
    if isinstance(model, nn.Module):
        model_obj, name, w, mhash = model, "", "", _model_hash(model)
    elif isinstance(model, str):
        w = weights if weights is not None else _default_weights(model)
        model_obj, name, mhash = zoo.get_model(model, weights=w or None), model, ""
    else:
        raise EvaluationError(f"model must be a model name or an nn.Module, got "
                              f"{type(model).__name__}")
    source = source_for(model_obj, data, split, n, seed)
    metric_list, notes = _metrics(metrics, source.has_masks, source.name)
    info = getattr(model_obj, "hooklab_info", None)
    shape = tuple(info.input_shape) if info is not None else tuple(source.sample(0)[0].shape)
    layer_list = _layers(model_obj, layers, shape)
    spec = EvalSpec(model=name, model_hash=mhash, weights=str(w), data=source.name,
                    split=source.split, n=len(source), data_seed=int(seed),
                    methods=method_list, layers=layer_list, metrics=metric_list, target=target,
                    steps=steps, batch_size=batch_size, seed=int(seed))
    # one image through every method and layer: a method the model cannot have, or a layer
    # without a spatial output, fails here, before a run exists
    x0 = source.sample(0)[0][None]
    engine.compute_many(model_obj, x0, list(method_list), list(layer_list))
    address = cluster.resolve_address(ray)
    target_store = store if isinstance(store, TraceStore) else TraceStore(store)
    run_id = run_id_for(spec) if resume else f"eval-{fmt.new_run_id()}"
    meta = {"page": PAGE, "model": name or type(model_obj).__name__, "evaluation":
            spec.to_dict(), "notes": notes, "data": source.name, "classes": list(source.classes),
            "weights": str(getattr(info, "weights", w))}
    with contextlib.ExitStack() as stack:
        rayed = (stack.enter_context(cluster.ray_session(address, num_cpus=workers,
                                                         timeout=ray_timeout))
                 if address is not None else None)
        writer, finished = _open_writer(target_store, run_id, spec, resume, meta, author,
                                        list(tags))
        if finished is not None:
            log.info("evaluation run %s is already finished", run_id)
            return EvaluationResult(run_id, finished.per_image, finished.summary, spec,
                                    scored=0, skipped=spec.n, notes=notes)
        assert writer is not None
        return _run(writer, spec, rayed, model_obj if not name else None, model_obj,
                    workers, threads, progress, notes, _fault, target_store)
    raise AssertionError("unreachable")  # pragma: no cover (mypy: ExitStack may swallow)


def _run(writer: EvaluationWriter, spec: EvalSpec, rayed: Any, ship: nn.Module | None,
         model: nn.Module, workers: int | None, threads: int, progress: Progress | None,
         notes: list[str], fault: str | None, store: TraceStore) -> EvaluationResult:
    done = writer.done
    skipped = len(done)
    pending = [(s, e) for s, e in chunks(spec.n, spec.batch_size)
               if not all(i in done for i in range(s, e))]

    def sink(rows: pd.DataFrame) -> None:
        fresh = rows[~rows["index"].isin(done)]
        if fresh.empty:
            log.info("a chunk arrived twice (a retried task); written once")
            return
        writer.write_rows(fresh, spec, len(done) + fresh["index"].nunique())
        done.update(int(i) for i in fresh["index"].unique())
        if progress is not None:
            progress(len(done), spec.n)

    try:
        if progress is not None:
            progress(len(done), spec.n)
        if rayed is not None and pending:
            from hooklab.studies.evaluation.on_ray import run_on_ray

            n_workers = workers or max(1, int(rayed.cluster_resources().get("CPU", 1)))
            run_on_ray(rayed, spec, pending, sink, workers=min(n_workers, len(pending)),
                       model=ship, threads=threads, fault=fault)
        elif pending:
            scorer = Scorer(spec, model, threads=threads)
            for s, e in pending:
                sink(scorer.score(s, e))
        missing = spec.n - len(done)
        if missing:
            raise EvaluationError(f"{missing} image(s) were not scored (lost results)")
        result = read_evaluation(store, writer.run_id)
        summary = summarise(result.per_image, spec)
        writer.finish(summary, len(done))
    except BaseException as exc:
        writer.close("failed", f"{type(exc).__name__}: {exc}", len(done))
        raise
    return EvaluationResult(writer.run_id, result.per_image, summary, spec,
                            scored=len(done) - skipped, skipped=skipped, notes=notes)
