"""Predict, then reveal: exercise sets an instructor writes (TOML), checked against the live
computation, and saved as runs so the Runs page shows the class's answers.

``spec`` (the file format and loader), ``checking`` (the live truth and the verdict), ``answers``
(attempts as runs, the class table). The default set, ``default.toml``, covers the seed's
lessons in English and 中文.

Example:
    >>> ex_set = load_set()
    >>> check(ex_set.get("tensor-k"), 96.0).correct      # k = 0.5: 192 * 0.5
    True
"""

from __future__ import annotations

from hooklab.studies.exercises.answers import (
    answer_summary,
    attempt_trace,
    class_answers,
    save_attempt,
)
from hooklab.studies.exercises.checking import Check, check, truth
from hooklab.studies.exercises.spec import (
    DEFAULT_SET,
    KINDS,
    Exercise,
    ExerciseError,
    ExerciseSet,
    load_set,
    parse_set,
)

__all__ = ["DEFAULT_SET", "KINDS", "Check", "Exercise", "ExerciseError", "ExerciseSet",
           "answer_summary", "attempt_trace", "check", "class_answers", "load_set", "parse_set",
           "save_attempt", "truth"]
