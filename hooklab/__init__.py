"""hooklab: see what PyTorch hooks do.

The library records forward outputs, backward gradients and gradient edits into a trace
(:func:`record`), stores traces as immutable run directories (:class:`TraceStore`) and computes
Grad-CAM-family maps. It never imports Streamlit; the dashboard in ``dashboard/`` is built on it.

Layers, top to bottom (each imports only from the ones above it): ``core`` (errors, edits, layer
resolution, the Trace), ``recording`` (:func:`record` and the watcher behind :func:`watch`: the
only code that registers hooks; :func:`hooks_on`), ``store`` (:class:`TraceStore`, streamed
watch runs), ``data``, ``models``, ``cam``, ``studies`` (training, the bias experiment, A/B
comparison, the seed's lessons), ``charts`` (Plotly figures), ``cli`` and ``testing`` (fault
injection for tests and benchmarks).
"""

from __future__ import annotations

import logging

from hooklab.cam import sanity  # hooklab.sanity: MPRT cascade, data randomisation
from hooklab.charts import notebook as _notebook  # noqa: F401 - registers .plot()'s figures
from hooklab.core import edits
from hooklab.core.errors import HooklabError
from hooklab.core.trace import Trace, tensor_stats
from hooklab.core.version import __version__
from hooklab.recording.attention import attention
from hooklab.recording.inventory import hooks_on
from hooklab.recording.recorder import Recorder, record
from hooklab.store.runs import TraceStore
from hooklab.store.watch import watch
from hooklab.studies.evaluation import evaluate
from hooklab.studies.sweep import sweep_edits

__all__ = ["HooklabError", "Recorder", "Trace", "TraceStore", "__version__", "attention", "edits", "evaluate",
           "hooks_on", "record", "sweep_edits", "tensor_stats", "watch", "sanity"]

logging.getLogger(__name__).addHandler(logging.NullHandler())
