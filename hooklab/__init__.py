"""hooklab: see what PyTorch hooks do.

The library records forward outputs, backward gradients and gradient edits into a trace
(:func:`record`), stores traces as immutable run directories (:class:`TraceStore`) and computes
Grad-CAM-family maps. It never imports Streamlit; the dashboard in ``dashboard/`` is built on it.
"""

from __future__ import annotations

import logging
from importlib import metadata
from typing import Any

from hooklab import edits
from hooklab.errors import HooklabError
from hooklab.trace import Trace, tensor_stats

try:
    __version__ = metadata.version("hooklab")
except metadata.PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"
__all__ = ["record", "Recorder", "Trace", "TraceStore", "edits", "HooklabError", "tensor_stats",
           "__version__"]

logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str) -> Any:
    # Lazy imports keep `import hooklab` light and avoid import cycles.
    if name in ("record", "Recorder"):
        from hooklab import recorder
        return getattr(recorder, name)
    if name == "TraceStore":
        from hooklab.store import TraceStore
        return TraceStore
    raise AttributeError(f"module 'hooklab' has no attribute {name!r}")
