"""Shared dashboard controls used by every page.

* :mod:`dashboard.components.run_flow` — open a run from ``?run=``, its banner, the one "leave
  run" button, save with author/notes/tags, the share link (from :mod:`dashboard.pages`).
* :mod:`dashboard.components.pickers` — model / input / layer / hook-kind / edit pickers; the one
  input pipeline (shapes sample, CIFAR-10 sample, upload, random) over
  :mod:`hooklab.models.inputs`.
* :mod:`dashboard.components.cam` — the Grad-CAM page's cached layer lists, CAM calls under the
  model's lock, its input and "Save run" recording (:mod:`hooklab.cam.runs`).
* :mod:`dashboard.components.text` — a run's text shown as text where it meets Markdown:
  ``code()`` (an inline code span) and ``plain()`` (escaped prose; URL-like words as code).
"""
