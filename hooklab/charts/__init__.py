"""Plotly figure builders: pure functions, data in -> ``go.Figure`` out.

Submodules: ``hooklab.charts.common`` (shared helpers), ``basics`` (hook-basics lessons),
``trace`` (timeline, event tables, tensor views), ``compare`` (A/B charts), ``cam`` (Grad-CAM
panels and metrics), ``runs`` (run lists), ``training`` (the Training page: watch runs),
``graph_dot`` (the backward graph with its hooks, as DOT), ``exercises`` (the exercise views), ``evaluation`` (an evaluation run's summary and
per-image boxes), ``trials`` (an edit sweep's trials, accuracy and gradient-norm ratios),
``notebook`` (the figures ``Trace.plot`` / ``WatchRun.plot`` use in Jupyter). Float32 arrays only; never more than ~1M values
sent to the browser (downsampled, and the figure says so).
"""
