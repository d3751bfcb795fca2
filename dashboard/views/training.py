"""Training — a watched training run (``hooklab.watch``), live while it trains.

Pick a run from the store (newest first; live and ended-early runs are marked) and optionally a
second one to compare. A live run refreshes itself every few seconds (``st.fragment``) without
rerunning the page. Figures: per-layer gradient-norm heatmap (log colour), the user's scalars
(loss, accuracy...), update ratio per parameter, dead units per layer, the first NaN/Inf, and two
runs' per-layer ratio over steps. With no training run in the store, a demo training (SimpleCNN
on the shapes set, no edit and ``conv2=scale(0.5)``) runs right here.

State lives in the URL: ``/training?run=<id>&compare=<id>``.
"""

from __future__ import annotations

from urllib.parse import urlencode

import streamlit as st

from dashboard import auth, pages, state
from dashboard.components import run_flow
from dashboard.components.text import code, plain
from dashboard.i18n import t
from hooklab.charts import training as charts
from hooklab.studies import training_runs as tr
from hooklab.studies import training_views as tv
from hooklab.studies import watch_demo

PAGE = "training"
#: Seconds between refreshes of a live run.
REFRESH_S = 3.0
#: Steps a figure shows at most (longer runs are binned).
MAX_STEPS = charts.MAX_STEPS
STEP_CHOICES = [100, 300, 600, 1200, 2000]
DEMO_STEPS = 60


def _status_text(status: str) -> str:
    return {"live": t("● live", "● 进行中"), "finished": t("finished", "已完成"),
            "failed": t("failed", "失败"), "ended early": t("ended early", "提前结束")
            }.get(status, status)


def _role_names() -> dict[str, str]:
    return {"grad_output": t("output gradient", "输出梯度"),
            "param_grad": t("parameter gradient", "参数梯度"),
            "output": t("activation", "激活")}


@st.cache_resource(max_entries=8, show_spinner=False)
def _load(root: str, run_id: str, version: tuple) -> tr.TrainingRun:
    """A run's tables, cached until it changes (``version``: committed segments and status)."""
    return tr.open_training(state.store(), run_id)


def load(store, run_id: str) -> tuple[tr.TrainingRun, tuple]:
    """The run, re-read only when a new segment was committed (or its status changed), and the
    version it was read at."""
    version = (str(store.root), run_id, tr.run_version(store, run_id))
    return _load(*version), version


@st.cache_resource(max_entries=16, show_spinner=False)
def _build(key: tuple, _run: tr.TrainingRun, _other: tr.TrainingRun | None, role: str,
           how: str, max_steps: int, names: tuple[str, str]) -> dict:
    """The figures of a run (and a comparison run), built once per ``key`` (both runs'
    versions): a live run's refresh redraws nothing until a new segment is committed."""
    run, other = _run, _other
    figs = {
        "heatmap": charts.grad_norm_heatmap(run.events, role, max_steps=max_steps, how=how),
        "curves": charts.scalar_curves({names[0]: other.scalars, names[1]: run.scalars}
                                       if other else run.scalars, how=how),
        "update": charts.update_ratio_lines(run.scalars, max_steps=max_steps, how=how),
        "dead": charts.dead_fraction_heatmap(run.scalars, max_steps=max_steps, how=how),
    }
    if other is not None:
        figs["ratio"] = charts.ratio_heatmap(other.events, run.events, role, names=names,
                                             max_steps=max_steps, how=how)
    return figs


def demo_section(store, *, first: bool) -> None:
    """The button that runs the demo training (two arms) into the store, then opens it."""
    if first:
        st.info(t("No training run in the store yet. Record your own training loop with "
                  "`hooklab.watch(model)`, or run a short demo training here: the seed's "
                  "SimpleCNN on the shapes set, twice from the same seed — no edit, and "
                  "conv2=scale(0.5).",
                  "记录库中还没有训练运行。可以用 `hooklab.watch(model)` 记录你自己的训练循环，"
                  "或在这里运行一个简短的演示训练：在 shapes 数据集上训练课程的 SimpleCNN，"
                  "同一随机种子训练两次——不修改，以及 conv2=scale(0.5)。"))
    steps = st.slider(t("Demo training steps", "演示训练步数"), 4, 200, DEMO_STEPS, step=2,
                      key=f"{PAGE}_demo_steps")
    if not st.button(t("Run the demo training", "运行演示训练"), type="primary",
                     key=f"{PAGE}_demo"):
        return
    with state.guard(t("Demo training", "演示训练")):
        with st.status(t("Training the two arms…", "正在训练两组…"), expanded=True) as box:
            bar = st.progress(0.0)

            def progress(done: int, total: int, text: str) -> None:
                bar.progress(min(1.0, done / max(total, 1)), text=text)

            ids = watch_demo.demo_pair(store, steps=steps, author=state.author(),
                                       by=auth.identity(), progress=progress)
            box.update(label=t("Demo training recorded.", "演示训练已记录。"), state="complete")
    st.query_params["run"] = ids[1]
    st.query_params["compare"] = ids[0]
    st.rerun()


def _label(row: dict) -> str:
    """``"● live · 20261202-… · simple_cnn · conv2=scale(0.5)"`` for the run pickers."""
    status = str(row.get("status") or "")
    mark = _status_text(status) if status != "finished" else ""
    if status.startswith("corrupt"):
        mark = t("damaged", "已损坏")
    parts = [mark, str(row["run_id"]), str(row.get("model") or ""),
             str(row.get("edits") or "") or t("no edit", "无修改")]
    return " · ".join(p for p in parts if p)


def _choose(table, wanted: str | None, other: str | None) -> tuple[str, str]:
    """The run and the comparison run (``""``: none); kept in the URL query."""
    ids = list(table["run_id"])
    labels = {row["run_id"]: _label(row) for row in table.to_dict("records")}
    if wanted and wanted not in ids:
        ids.append(wanted)
        labels[wanted] = wanted
    c1, c2 = st.columns(2)
    rid = c1.selectbox(t("Run", "运行"), ids, index=ids.index(wanted) if wanted in ids else 0,
                       key=f"{PAGE}_run_{wanted}", format_func=lambda r: labels.get(r, r))
    others = [""] + [r for r in ids if r != rid]
    cmp = c2.selectbox(t("Compare with (run A; the chosen run is B)",
                         "与之比较（运行 A；所选运行为 B）"), others,
                       index=others.index(other) if other in others else 0,
                       key=f"{PAGE}_cmp_{rid}_{other}",
                       format_func=lambda r: labels.get(r, r) if r else t("— none —", "— 无 —"))
    if st.query_params.get("run") != rid:
        st.query_params["run"] = rid
    if cmp and st.query_params.get("compare") != cmp:
        st.query_params["compare"] = cmp
    elif not cmp and "compare" in st.query_params:
        del st.query_params["compare"]
    return rid, cmp


def _header(run: tr.TrainingRun) -> None:
    """Status, steps, last scalars; the first NaN/Inf as a callout."""
    meta = run.meta
    parts = [f"{t('Run', '运行')} {plain(run.run_id)}", plain(_status_text(run.status)),
             plain(run.manifest.get("author")), plain(meta.get("model")),
             plain(run_flow.edit_text(meta)) or t("no edit", "无修改")]  # a run's text as text
    st.info(" · ".join(p for p in parts if p))
    cols = st.columns(2 + min(4, len(run.last)))
    cols[0].metric(t("Recorded steps", "已记录步数"), f"{len(run.steps):,}")
    cols[1].metric(t("Last step", "最后一步"), f"{run.last_step:,}" if run.last_step >= 0
                   else "—")
    for col, (name, (step, value)) in zip(cols[2:], list(run.last.items())[:4], strict=False):
        col.metric(plain(name), f"{value:.4g}",
                   help=t(f"at step {step}", f"第 {step} 步"))
    if run.status == "live":
        st.caption(t(f"Live: refreshes every {REFRESH_S:g} s while the training runs.",
                     f"进行中：训练期间每 {REFRESH_S:g} 秒刷新一次。"))
    elif run.status == "ended early":
        st.warning(t("This run ended early (its writer stopped without closing it): every "
                     "committed step is shown.",
                     "此运行提前结束（写入进程未正常关闭）：显示所有已提交的步。"))
    elif run.status == "failed":
        err = str(run.manifest.get("error") or "")
        st.warning(t("The training loop raised an error", "训练循环出错")
                   + (f": {plain(err)}" if err else "."))
    found = tv.first_nonfinite(run.events)
    if found is not None:
        st.warning(t(f"First NaN/Inf: {plain(found.text())} (ringed on the heatmap).",
                     f"首个 NaN/Inf：{plain(found.text())}（热图上已圈出）。"),
                   icon=":material/error:")
    bad = tv.first_nonfinite_scalar(run.scalars)
    if bad is not None:
        st.warning(t(f"First non-finite scalar: {plain(bad.text())}.",
                     f"首个非有限标量：{plain(bad.text())}。"), icon=":material/error:")


def _figures(figs: dict, run: tr.TrainingRun, other: tr.TrainingRun | None, how: str,
             max_steps: int) -> None:
    """The figures of one run, and the comparison when a second run is chosen."""
    note = tv.binning_for(len(run.steps), max_steps, how).note()
    if note:
        st.caption(t(f"Long run: {note}.", f"长运行：{note}。"))
    st.plotly_chart(figs["heatmap"], width="stretch", key=f"{PAGE}_heatmap")
    st.plotly_chart(figs["curves"], width="stretch", key=f"{PAGE}_curves")
    c1, c2 = st.columns(2)
    with c1:
        st.plotly_chart(figs["update"], width="stretch", key=f"{PAGE}_update")
    with c2:
        st.plotly_chart(figs["dead"], width="stretch", key=f"{PAGE}_dead")
        st.caption(t("A unit (channel) is dead when it is exactly zero for every sample of the "
                     "batch. A layer whose ReLU is a function in forward() (the seed's "
                     "SimpleCNN) is recorded before the ReLU, and is rarely exactly zero.",
                     "某个单元（通道）对批次中每个样本都恰好为零时即为死亡单元。若 ReLU 是 forward() "
                     "中的函数调用（如课程的 SimpleCNN），记录的是 ReLU 之前的输出，很少恰好为零。"))
    if other is None:
        return
    st.subheader(t("Two runs side by side", "两个运行并排比较"))
    no_edit = t("no edit", "无修改")
    st.markdown(f"**A** {other.run_id}: {code(run_flow.edit_text(other.meta) or no_edit)} · "
                f"**B** {run.run_id}: {code(run_flow.edit_text(run.meta) or no_edit)}")
    st.plotly_chart(figs["ratio"], width="stretch", key=f"{PAGE}_ratio")
    st.caption(t("Red: B's gradient is smaller than A's at that layer and step, blue: larger. "
                 "From the same seed, halving conv2's output gradient halves every gradient "
                 "upstream of conv2 at step 0 (ratio 0.5); after that the runs diverge.",
                 "红色：该层该步 B 的梯度比 A 小；蓝色：更大。同一随机种子下，把 conv2 的输出梯度"
                 "减半，会在第 0 步使 conv2 上游的所有梯度减半（比值 0.5）；之后两个运行逐渐不同。"))


def share_box(rid: str, cmp: str) -> None:
    """The share link of this view: the run, and the comparison run when one is chosen."""
    link = pages.share_link(rid, PAGE)
    if cmp:
        link += "&" + urlencode({"compare": cmp})
    st.caption(t("Share link — opens this view for anyone on this server:",
                 "分享链接——同一服务器上的任何人都可打开此视图："))
    st.code(link, language=None)


def live_view(store, rid: str, cmp: str, role: str, how: str, max_steps: int,
              was_live: bool) -> None:
    """Everything that changes while a run trains (a fragment when the run is live)."""
    got = state.attempt(t(f"Opening run {rid}", f"打开运行 {rid}"), load, store, rid)
    if got is None:
        return
    run, version = got
    got_other = state.attempt(t(f"Opening run {cmp}", f"打开运行 {cmp}"), load, store, cmp) \
        if cmp else None
    other, other_version = got_other if got_other is not None else (None, None)
    if was_live and not (run.status == "live" or (other and other.status == "live")):
        st.rerun()  # the training ended: rerun the page once, without the refresh timer
    _header(run)
    if run.events.empty and run.scalars.empty:
        st.info(t("No step committed yet; the first segment appears within seconds.",
                  "还没有提交任何步；第一个片段几秒内就会出现。"))
        return
    names = (t("A", "A") + f" {cmp}", t("B", "B") + f" {rid}")
    with state.guard(t("Drawing the figures", "绘制图表")):
        figs = _build((version, other_version, role, how, max_steps, names), run, other, role,
                      how, max_steps, names)
        _figures(figs, run, other, how, max_steps)


def main() -> None:
    st.title(t("Training", "训练"))
    st.caption(t("A training loop recorded with hooklab.watch: gradient norms per layer and "
                 "step, loss and accuracy, update ratios, dead units, the first NaN/Inf, and "
                 "two runs side by side. Live runs refresh themselves.",
                 "用 hooklab.watch 记录的训练循环：每层每步的梯度范数、损失与准确率、更新比例、"
                 "死亡单元、首个 NaN/Inf，以及两个运行的并排比较。进行中的运行会自动刷新。"))
    with state.guard(t("Opening the store", "打开记录库")):
        store = state.store()
    with state.guard(t("Listing runs", "列出运行")):
        table = tr.training_runs(store.list())
    wanted, other = st.query_params.get("run"), st.query_params.get("compare")
    if table.empty and not wanted:
        demo_section(store, first=True)
        return
    rid, cmp = _choose(table, wanted, other)
    c1, c2 = st.columns(2)
    names = _role_names()
    role = c1.radio(t("Heatmap of", "热图"), list(names), format_func=names.get, horizontal=True,
                    key=f"{PAGE}_role")
    how = c2.radio(t("Long runs: per bin of steps", "长运行：每组步取"), ["mean", "max"],
                   format_func={"mean": t("mean", "平均"), "max": t("max", "最大")}.get,
                   horizontal=True, key=f"{PAGE}_how")
    max_steps = st.select_slider(t("Most steps per figure (longer runs are binned)",
                                   "每张图最多显示的步数（更长的运行会分组）"), STEP_CHOICES,
                                 value=MAX_STEPS, key=f"{PAGE}_max_steps")
    live_ids = set(table.loc[table["status"] == "live", "run_id"])
    live = bool({rid, cmp} & live_ids)
    view = st.fragment(run_every=REFRESH_S if live else None)(live_view)
    view(store, rid, cmp, role, how, int(max_steps), live)
    share_box(rid, cmp)
    with st.expander(t("Run another demo training", "再运行一次演示训练")):
        demo_section(store, first=False)


if __name__ == "__main__":  # Streamlit runs a page as __main__; importing it runs nothing
    main()
