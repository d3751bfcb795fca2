"""The core vocabulary every layer shares, one definition per concept. Imports nothing else of
hooklab.

- ``errors``: the exception hierarchy.
- ``edits``: the edits, :class:`~hooklab.core.edits.EditSpec` (its ``str`` is the one edit text,
  ``LAYER=EDIT[@TARGET]``), ``normalise_edits`` and ``describe``.
- ``hooks``: the one table of PyTorch hook kinds (API, phase, help).
- ``layers``: the one layer resolver (names, globs, types, type names, modules).
- ``modes``: the one save/restore of train/eval mode and ``requires_grad`` (``eval_mode``,
  ``frozen``).
- ``trace``: the Trace, its event rows (``Trace.record_event``), roles, phases and tensor
  statistics.
- ``machine``, ``version``: the machine description and the package version.
"""
