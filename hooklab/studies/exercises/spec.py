"""The exercise-file format an instructor writes (TOML), and its loader.

A file is one exercise set::

    format = 1
    id = "seed-hooks"
    title = "Hooks: predict, then reveal"
    title_zh = "钩子：先预测，再揭晓"

    [[exercises]]
    id = "tensor-k"
    kind = "tensor_grad"        # one of KINDS
    question = "x = 2, y = x**2, z = y**3; the hook on y returns grad * k. Predict x.grad."
    question_zh = "..."
    k = 0.25                    # kind-specific fields (see KINDS)
    explanation = "optional text shown after the answer"   # and explanation_zh

Every error names the file, the exercise and the field, in one line (:class:`ExerciseError`).

Example:
    >>> ex_set = load_set()                      # the default set shipped with hooklab
    >>> [e.kind for e in ex_set.exercises]
    ['tensor_grad', 'norm_ratio', 'cam_peak', 'backward_len']
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hooklab.core.errors import HooklabError

__all__ = ["DEFAULT_SET", "FORMAT", "KINDS", "Exercise", "ExerciseError", "ExerciseSet",
           "load_set", "parse_set"]

#: The file format version this code reads.
FORMAT = 1
#: The default set, shipped with hooklab (English + 中文), covering the seed's lessons.
DEFAULT_SET = Path(__file__).resolve().parent / "default.toml"

#: kind -> {field: (type, default)}; a default of ``...`` means the field is required.
KINDS: dict[str, dict[str, tuple[type | tuple[type, ...], Any]]] = {
    "tensor_grad": {"k": ((int, float), 0.5), "x": ((int, float), 2.0),
                    "choose_k": (bool, True), "tolerance": ((int, float), 1e-3)},
    "norm_ratio": {"model": (str, "simple_cnn"), "weights": (str, "shapes"),
                   "edit": (str, "conv2=scale(0.5)"), "layers": (list, ["conv1", "conv2", "conv3"]),
                   "index": (int, 102), "tolerance": ((int, float), 0.05)},
    "cam_peak": {"model": (str, "simple_cnn"), "weights": (str, "shapes"), "index": (int, 102),
                 "layer": (str, "conv3"), "method": (str, "gradcam"),
                 "threshold": ((int, float), 0.6)},
    "backward_len": {"kinds": (list, ["backward", "full_backward", "full_backward_pre",
                                      "tensor"])},
}
_COMMON = {"id", "kind", "question", "question_zh", "explanation", "explanation_zh"}


class ExerciseError(HooklabError, ValueError):
    """A bad exercise file or a bad answer, in one line."""


@dataclass(frozen=True)
class Exercise:
    """One question of a set."""

    id: str
    kind: str
    question: str
    question_zh: str = ""
    explanation: str = ""
    explanation_zh: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    def text(self, lang: str = "en") -> str:
        return self.question_zh if lang == "zh" and self.question_zh else self.question

    def note(self, lang: str = "en") -> str:
        return self.explanation_zh if lang == "zh" and self.explanation_zh else self.explanation


@dataclass(frozen=True)
class ExerciseSet:
    """An instructor's exercise file."""

    id: str
    title: str
    exercises: tuple[Exercise, ...]
    title_zh: str = ""
    source: str = ""

    def get(self, exercise_id: str) -> Exercise:
        for e in self.exercises:
            if e.id == exercise_id:
                return e
        raise ExerciseError(f"{self.source or self.id}: no exercise {exercise_id!r}; "
                            f"there are: {', '.join(e.id for e in self.exercises)}")

    def name(self, lang: str = "en") -> str:
        return self.title_zh if lang == "zh" and self.title_zh else self.title


def _type_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("number" if k in (int, float) else k.__name__ for k in kinds)


def _exercise(raw: Any, where: str, n: int) -> Exercise:
    if not isinstance(raw, dict):
        raise ExerciseError(f"{where}: exercise {n} is not a table ([[exercises]])")
    eid = raw.get("id")
    if not isinstance(eid, str) or not eid.strip():
        raise ExerciseError(f"{where}: exercise {n} needs an id (a non-empty string)")
    at = f"{where}: exercise {eid!r}"
    kind = raw.get("kind")
    if kind not in KINDS:
        raise ExerciseError(f"{at}: kind {kind!r} is not one of {', '.join(KINDS)}")
    question = raw.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ExerciseError(f"{at}: needs a question (text)")
    fields = KINDS[kind]
    unknown = sorted(set(raw) - _COMMON - set(fields))
    if unknown:
        raise ExerciseError(f"{at}: unknown field(s) {', '.join(unknown)}; a {kind} exercise "
                            f"has {', '.join(sorted(fields)) or 'no extra fields'}")
    params: dict[str, Any] = {}
    for name, (typ, default) in fields.items():
        value = raw.get(name, default)
        if isinstance(value, bool) and typ is not bool or not isinstance(value, typ):
            raise ExerciseError(f"{at}: {name} must be a {_type_name(typ)}, got {value!r}")
        params[name] = value
    for text in ("question_zh", "explanation", "explanation_zh"):
        if not isinstance(raw.get(text, ""), str):
            raise ExerciseError(f"{at}: {text} must be text")
    return Exercise(eid.strip(), kind, question.strip(), raw.get("question_zh", "").strip(),
                    raw.get("explanation", "").strip(), raw.get("explanation_zh", "").strip(),
                    params)


def parse_set(text: str, source: str = "<exercise file>") -> ExerciseSet:
    """An :class:`ExerciseSet` from TOML text; :class:`ExerciseError` names what is wrong."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ExerciseError(f"{source}: not valid TOML ({exc})") from exc
    fmt = raw.get("format", FORMAT)
    if fmt != FORMAT:
        raise ExerciseError(f"{source}: format {fmt!r} is not supported (this hooklab reads "
                            f"format {FORMAT})")
    sid = raw.get("id")
    if not isinstance(sid, str) or not sid.strip():
        raise ExerciseError(f"{source}: the set needs an id (id = \"...\" at the top)")
    items = raw.get("exercises")
    if not isinstance(items, list) or not items:
        raise ExerciseError(f"{source}: no exercises (add [[exercises]] tables)")
    exercises = tuple(_exercise(item, source, i + 1) for i, item in enumerate(items))
    ids = [e.id for e in exercises]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ExerciseError(f"{source}: exercise id(s) used twice: {', '.join(dup)}")
    title = raw.get("title", sid)
    return ExerciseSet(sid.strip(), str(title), exercises, str(raw.get("title_zh", "")), source)


def load_set(path: str | Path | None = None) -> ExerciseSet:
    """Read an exercise file (default: :data:`DEFAULT_SET`)."""
    p = Path(path) if path is not None else DEFAULT_SET
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ExerciseError(f"{p}: not UTF-8 text ({exc.reason})") from exc
    except OSError as exc:
        raise ExerciseError(f"{p}: cannot read it ({exc.strerror or exc})") from exc
    return parse_set(text, str(p))
