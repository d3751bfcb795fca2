"""Attempts as runs in the trace store, and the class's answers per exercise.

An attempt is saved as a run with no events: ``meta`` holds ``page="hook_basics"``,
``kind="exercise"``, the set and exercise ids, the answer, the live truth and whether it was
right; the author is the student; tags ``exercise`` and ``exercise:<id>``. The instructor's Runs
page reads them back with :func:`class_answers` / :func:`answer_summary`.

Example:
    >>> rid = save_attempt(store, ex_set, check(ex, 96.0), student="ana")
    >>> answer_summary(class_answers(store))
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from hooklab.core.trace import Trace
from hooklab.store.access import Identity
from hooklab.store.runs import TraceStore
from hooklab.studies.exercises.checking import Check
from hooklab.studies.exercises.spec import ExerciseError, ExerciseSet

__all__ = ["ANSWER_COLUMNS", "SUMMARY_COLUMNS", "TAG", "answer_summary", "attempt_trace",
           "class_answers", "save_attempt"]

#: Every attempt run carries this tag.
TAG = "exercise"
#: Columns of :func:`class_answers`.
ANSWER_COLUMNS = ("exercise", "student", "answer", "correct", "truth", "created", "set",
                  "run_id")
#: Columns of :func:`answer_summary`.
SUMMARY_COLUMNS = ("exercise", "attempts", "students", "correct", "correct_share")


def _plain(value: Any) -> Any:
    """JSON-able: numpy scalars and tuples to Python numbers and lists."""
    return json.loads(json.dumps(value, default=float))


def attempt_trace(ex_set: ExerciseSet, result: Check, student: str, page: str = "hook_basics"
                  ) -> Trace:
    """The run (no events) that records one attempt."""
    return Trace(meta={
        "page": page, "kind": "exercise", "model": "exercise", "exercise_set": ex_set.id,
        "exercise": result.exercise, "answer": _plain(result.answer),
        "truth": _plain(result.truth), "correct": bool(result.correct),
        "parts": _plain(result.parts), "params": _plain(result.params), "student": student,
    })


def save_attempt(store: TraceStore, ex_set: ExerciseSet, result: Check, student: str,
                 page: str = "hook_basics", by: Identity | None = None) -> str:
    """Save one attempt under ``student``'s name; returns the run id.

    With ``by`` (a signed-in member) the attempt is hers: the student and the author are
    ``by.label`` whatever name was typed, and the run records her identity.
    """
    name = (by.label if by is not None else student or "").strip()
    if not name:
        raise ExerciseError("enter your name before saving an answer")
    trace = attempt_trace(ex_set, result, name, page)
    verdict = "right" if result.correct else "wrong"
    return store.save(trace, author=name, notes=f"{result.exercise}: {verdict}",
                      tags=[TAG, f"{TAG}:{result.exercise}"], by=by)


def _text(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False, sort_keys=True) if isinstance(v, (dict, list)) \
        else str(v)


def class_answers(store: TraceStore, set_id: str | None = None) -> pd.DataFrame:
    """Every saved attempt (newest first), optionally of one exercise set."""
    listing = store.list(tag=TAG)
    rows = []
    for rec in listing.to_dict("records"):
        if rec.get("status", "ok") != "ok":
            continue
        meta = store.manifest(rec["run_id"]).get("meta", {})
        if meta.get("kind") != "exercise" or (set_id and meta.get("exercise_set") != set_id):
            continue
        rows.append({"exercise": meta.get("exercise", ""), "student": rec.get("author", ""),
                     "answer": _text(meta.get("answer")), "correct": bool(meta.get("correct")),
                     "truth": _text(meta.get("truth")), "created": rec.get("created", ""),
                     "set": meta.get("exercise_set", ""), "run_id": rec["run_id"]})
    return pd.DataFrame(rows, columns=list(ANSWER_COLUMNS))


def answer_summary(answers: pd.DataFrame) -> pd.DataFrame:
    """One row per exercise: attempts, distinct students, right answers and their share."""
    if answers.empty:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    g = answers.groupby("exercise", sort=True)
    out = g.agg(attempts=("run_id", "size"), students=("student", "nunique"),
                correct=("correct", "sum")).reset_index()
    out["correct_share"] = out["correct"] / out["attempts"]
    return out[list(SUMMARY_COLUMNS)]
