"""Shared dashboard controls used by every page.

* :mod:`dashboard.components.run_flow` — open a run from ``?run=``, its banner, the one "leave
  run" button, save with author/notes/tags, the share link (from :mod:`dashboard.pages`).
* :mod:`dashboard.components.pickers` — model / input / layer / hook-kind / edit pickers; the one
  input pipeline (shapes sample, CIFAR-10 sample, upload, random) over
  :mod:`hooklab.models.inputs`.
* :mod:`dashboard.components.cam` — the Grad-CAM page's cached layer lists, CAM calls under the
  model's lock, its input and "Save run" recording (:mod:`hooklab.cam.runs`).
"""
