"""Predict, then reveal: the exercise panels of Hook basics and the Inspector.

The set is the default one (:data:`hooklab.studies.exercises.DEFAULT_SET`), the file named by
``$HOOKLAB_EXERCISES``, or one an instructor uploads in the section. Each exercise asks for a
prediction, "Check" compares it with the live computation (hooklab does the computing) and
explains; "Save my answer" stores the attempt as a run under the student's name, so the Runs
page shows the class's answers per exercise.
"""

from __future__ import annotations

import os

import streamlit as st

from dashboard import auth, state
from dashboard.components.text import plain
from dashboard.i18n import lang, t
from hooklab.charts import exercises as charts
from hooklab.data import datasets
from hooklab.studies import exercises as ex_lib
from hooklab.studies.exercises import Check, Exercise, ExerciseSet

__all__ = ["exercise_section", "exercise_set"]


@st.cache_data(show_spinner=False)
def _default_set(path: str) -> ExerciseSet:
    return ex_lib.load_set(path or None)


def exercise_set(page: str) -> ExerciseSet | None:
    """The set in use on ``page``: an uploaded one, else $HOOKLAB_EXERCISES, else the default."""
    uploaded = st.session_state.get(f"{page}_exset")
    if uploaded is not None:
        return uploaded
    return state.attempt(t("Exercise file", "练习文件"), _default_set,
                         os.environ.get("HOOKLAB_EXERCISES", ""))


@st.cache_data(show_spinner=False)
def _image(index: int):
    return datasets.to_display(datasets.shapes_sample(index)[0])


def _answer_tensor(ex: Exercise, key: str) -> tuple[object, dict]:
    choice = {}
    if ex.params["choose_k"]:
        choice["k"] = st.number_input(t("Factor k the hook multiplies by", "钩子乘的因子 k"),
                                      value=float(ex.params["k"]), step=0.05,
                                      key=f"{key}_k")
    else:
        st.caption(f"k = {ex.params['k']:g}")
    answer = st.number_input(t("Your x.grad", "你预测的 x.grad"), value=None, step=1.0,
                             key=f"{key}_answer")
    return answer, choice


def _answer_per_item(items: list[str], key: str, integer: bool) -> dict:
    cols = st.columns(len(items))
    return {item: col.number_input(item, value=None, step=1 if integer else 0.05,
                                   key=f"{key}_{item}")
            for col, item in zip(cols, items, strict=True)}


def _answer_cam(ex: Exercise, key: str) -> tuple[object, dict]:
    img = _image(int(ex.params["index"]))
    event = st.plotly_chart(
        charts.click_image(img, title=t("Click where the map peaks", "点击热力图最强的位置")),
        on_select="rerun", selection_mode="points", key=f"{key}_click")
    clicked = charts.clicked_pixel(event)
    if clicked is not None and st.session_state.get(f"{key}_last_click") != clicked:
        # a new click fills the pixel once; typing a pixel afterwards is kept
        st.session_state[f"{key}_last_click"] = clicked
        st.session_state[f"{key}_row"], st.session_state[f"{key}_col"] = clicked
    c1, c2 = st.columns(2)
    row = c1.number_input(t("row", "行"), min_value=0, max_value=img.shape[0] - 1, value=None,
                          step=1, key=f"{key}_row")
    col = c2.number_input(t("column", "列"), min_value=0, max_value=img.shape[1] - 1,
                          value=None, step=1, key=f"{key}_col")
    return ([row, col] if row is not None and col is not None else None), {}


def _answer(ex: Exercise, key: str) -> tuple[object, dict]:
    if ex.kind == "tensor_grad":
        return _answer_tensor(ex, key)
    if ex.kind == "norm_ratio":
        return _answer_per_item(list(ex.params["layers"]), key, integer=False), {}
    if ex.kind == "cam_peak":
        return _answer_cam(ex, key)
    return _answer_per_item(list(ex.params["kinds"]), key, integer=True), {}


def _reveal(ex: Exercise, result: Check) -> None:
    if result.correct:
        st.success(t("Right!", "答对了！") + f" {t('Live value', '实际值')}: `{result.truth}`")
    else:
        st.error(t("Not quite.", "不太对。") + f" {t('Live value', '实际值')}: `{result.truth}`")
    if result.parts:
        st.write(" · ".join(f"{k}: {'✓' if v else '✗'}" for k, v in result.parts.items()))
    st.markdown(result.explanation.replace("\n", "  \n"))
    if ex.kind == "cam_peak":
        from hooklab.studies.exercises.checking import cam_map

        p = ex.params
        cam = state.attempt(t("Grad-CAM", "Grad-CAM"), cam_map, p["model"], p["weights"],
                            int(p["index"]), p["layer"], p["method"])
        if cam is not None:
            st.plotly_chart(charts.cam_reveal(_image(int(p["index"])), cam, result.answer,
                                              result.truth, title="Grad-CAM",
                                              labels=(t("your point", "你的点"), t("peak", "峰值"))),
                            key=f"reveal_{ex.id}_{id(result)}")


def _panel(ex_set: ExerciseSet, ex: Exercise, page: str, student: str) -> None:
    key = f"{page}_ex_{ex.id}"
    with st.container(border=True, key=f"{key}_box"):
        st.markdown(f"**{ex.id}** — {ex.text(lang())}")
        answer, choice = _answer(ex, key)
        if st.button(t("Check", "检查"), key=f"{key}_check", type="primary"):
            result = state.attempt(t("Checking", "检查"), ex_lib.check, ex, answer, lang=lang(),
                                   **choice)
            st.session_state[f"{key}_result"] = result
            st.session_state.pop(f"{key}_saved", None)
        result = st.session_state.get(f"{key}_result")
        if result is None:
            return
        _reveal(ex, result)
        if st.button(t("Save my answer", "保存我的答案"), key=f"{key}_save"):
            rid = state.attempt(t("Saving the answer", "保存答案"), ex_lib.save_attempt,
                                state.store(), ex_set, result, student, page,
                                by=auth.identity())
            if rid:
                st.session_state[f"{key}_saved"] = rid
        if st.session_state.get(f"{key}_saved"):
            rid, who = st.session_state[f"{key}_saved"], plain(student)
            st.success(t(f"Saved as run {rid} under {who}.", f"已保存为运行 {rid}（{who}）。"))


def _upload(page: str) -> None:
    up = st.file_uploader(t("Instructor's exercise file (.toml)", "老师的练习文件（.toml）"),
                          type=["toml"], key=f"{page}_exfile")
    if up is None:
        return
    parsed = state.attempt(t("Exercise file", "练习文件"), lambda: ex_lib.parse_set(
        up.getvalue().decode("utf-8", errors="replace"), up.name))
    if parsed is not None:
        st.session_state[f"{page}_exset"] = parsed


def exercise_section(page: str, kinds: tuple[str, ...] | None = None) -> None:
    """The exercises of the current set (only ``kinds`` when given) with the student's name."""
    _upload(page)
    ex_set = exercise_set(page)
    if ex_set is None:
        return
    st.caption(t(f"Exercise set: {ex_set.name('en')}", f"练习集：{ex_set.name('zh')}"))
    if auth.identity() is not None:  # signed in: answers are saved under the member's identity
        student = state.author()
        st.caption(t(f"Your answers are saved under your sign-in: {plain(student)}",
                     f"你的答案以登录身份保存：{plain(student)}"))
    else:
        student = st.text_input(t("Your name (saved with your answers)", "你的名字（随答案保存）"),
                                value=state.author(), key=f"{page}_student")
    for ex in ex_set.exercises:
        if kinds is None or ex.kind in kinds:
            _panel(ex_set, ex, page, student)
