"""Page 1 — Hook basics: the seed's lessons, live, each with its code beside its result."""

from __future__ import annotations

import streamlit as st

from dashboard import state
from dashboard.components import exercises as exercise_ui
from dashboard.components import run_flow
from dashboard.i18n import lang, t
from hooklab.charts import attention as attention_charts
from hooklab.charts import basics as charts
from hooklab.charts import trace as trace_charts
from hooklab.charts.graph_dot import graph_dot
from hooklab.studies import graphs, hook_doctor, inspect, lessons

PAGE = "hook_basics"


@st.cache_data(show_spinner=False)
def _forward(language: str = "en"):
    return lessons.forward_hook_lesson(lang=language)


@st.cache_data(show_spinner=False)
def _backward(language: str = "en"):
    return lessons.backward_hook_lesson(lang=language)


@st.cache_data(show_spinner=False)
def _replace():
    return lessons.forward_replace_lesson()


#: The hook notes' words in Chinese (the graph is drawn in the page's language).
ZH_LABELS = {"tensor": "张量钩子", "full_backward": "full backward 钩子",
             "full_backward_pre": "full backward pre 钩子",
             "backward": "register_backward_hook（已弃用）",
             "post_accumulate_grad": "post-accumulate-grad 钩子"}


@st.cache_data(show_spinner=False)
def _graph(name: str, kinds: tuple[str, ...], layer: str, edit: str, k: float, collapse: bool,
           language: str = "en"):
    """DOT text and hooks table of one graph example (hooklab.studies.graphs)."""
    hooks = {layer: list(kinds)} if kinds and layer else None
    g = graphs.example_graph(name, hooks=hooks, edits=edit or None, k=k)
    zh = language == "zh"
    dot = graph_dot(g, max_nodes=1 if collapse else 60, labels=ZH_LABELS if zh else None,
                    words=("挂在", "修改") if zh else ("on", "edit"))
    return dot, g.hooks_table(), len(g.nodes)


@st.cache_data(show_spinner=False)
def _seed_gradcam_twice():
    """The hook inventory of a SimpleCNN copy after the seed's GradCAM ran twice."""
    import torch

    from hooklab.models.zoo import SimpleCNN

    torch.manual_seed(0)
    return hook_doctor.seed_gradcam_twice(SimpleCNN().eval(), torch.randn(1, 3, 32, 32))


def graph_section(k: float) -> None:
    """7 · the backward graph of an example with the hooks on it, numbered in firing order."""
    st.header(t("7 · The autograd graph, with the hooks on it", "7 · 自动求导图以及上面的钩子"))
    st.caption(t("Boxes are grad_fn nodes (gradients flow top to bottom), ellipses the leaves "
                 "whose .grad is filled, notes the hooks where PyTorch calls them, numbered in "
                 "the order they fired; an edited gradient is red. Dashed boxes are the "
                 "BackwardHookFunction nodes PyTorch inserts for full backward hooks.",
                 "方框是 grad_fn 节点（梯度自上而下流动），椭圆是会被写入 .grad 的叶子，便签是钩子，"
                 "画在 PyTorch 调用它的节点旁，编号为触发顺序；被修改的梯度为红色。虚线框是 PyTorch "
                 "为 full backward 钩子插入的 BackwardHookFunction 节点。"))
    c1, c2, c3 = st.columns(3)
    name = c1.selectbox(t("Example", "示例"), list(graphs.EXAMPLES), index=2,
                        format_func=lambda n: t(*graphs.EXAMPLES[n]), key="graph_example")
    layers = graphs.DEFAULT_LAYERS.get(name, [])
    kinds: tuple[str, ...] = ()
    layer = ""
    edit = ""
    if layers:
        layer = c2.selectbox(t("Extra hooks on", "额外钩子挂在"), layers, key="graph_layer")
        kinds = tuple(c2.multiselect(t("Module backward hooks", "模块反向钩子"),
                                     ["full_backward_pre", "full_backward", "backward"],
                                     key="graph_kinds"))
        default_edit = "conv2=scale(0.5)" if name == "simple_cnn" else ""
        edit = c3.text_input(t("Gradient edit", "梯度修改"), value=default_edit,
                             key=f"graph_edit_{name}")
    collapse = c1.toggle(t("Collapse by module", "按模块折叠"), key="graph_collapse")
    with state.guard(t("Backward graph", "反向图")):
        dot, table, n_nodes = _graph(name, kinds, layer, edit.strip(), k, collapse, lang())
    st.graphviz_chart(dot, width="stretch")
    st.caption(t(f"{n_nodes} autograd nodes.", f"{n_nodes} 个自动求导节点。")
               + (t(" Collapsed by module.", " 已按模块折叠。") if collapse or n_nodes > 60
                  else ""))
    st.dataframe(table, hide_index=True, width="stretch", key="graph_hooks")
    st.markdown(t("The deprecated `register_backward_hook` sits on the module's **last** node "
                  "(add it to a layer above): for a conv that is the convolution itself, but "
                  "for a module of several ops it only sees the last one.",
                  "已弃用的 `register_backward_hook` 挂在模块的**最后一个**节点上（在上面把它加到某层试试）："
                  "卷积层只有卷积这一个操作，但多操作模块里它只看到最后一个操作。"))


def doctor_section() -> None:
    """8 · the hook inventory after the seed's GradCAM ran twice."""
    st.header(t("8 · Hook doctor: which hooks are still on the model?",
                "8 · 钩子体检：模型上还挂着哪些钩子？"))
    st.markdown(t("The seed's `GradCAM` registers two hooks in `register_hooks` and drops both "
                  "handles. Run the cell twice and conv3 carries **four** hooks; the first "
                  "object's hooks still fire on every forward and backward. "
                  "`hooklab.hooks_on(model)` lists every hook and flags those no live handle "
                  "can remove.",
                  "课程的 `GradCAM` 在 `register_hooks` 里注册了两个钩子，却把两个句柄都丢掉了。"
                  "这个单元格运行两次，conv3 上就有**四个**钩子；第一个对象的钩子在之后每次前向和反向"
                  "时仍会触发。`hooklab.hooks_on(model)` 列出所有钩子，并标出没有任何存活句柄能移除的钩子。"))
    left, right = st.columns([2, 3])
    left.code("grad_cam = GradCAM(model, model.conv3)   # run twice\n"
              "grad_cam = GradCAM(model, model.conv3)\n"
              "hooklab.hooks_on(model)", language="python")
    with right, state.guard(t("Hook inventory", "钩子清单")):
        inv = _seed_gradcam_twice()
        st.dataframe(inv[["module", "kind", "function", "looks_leaked", "reason"]],
                     hide_index=True, width="stretch", key="doctor_table")
        st.metric(t("hooks that look leaked", "疑似泄漏的钩子"), int(inv["looks_leaked"].sum()))


def _record_seed(k: float):
    """The seed's SimpleModel recorded with the conv output gradient scaled by k (for saving)."""
    return inspect.record_seed_model(
        _forward().input, k, meta={"page": PAGE, "model": "simple_model", "k": k,
                                   "input": {"source": "seed", "seed": 42}})


@st.cache_resource(show_spinner=False)
def _attention_vit():
    """The attention lesson's ViT (simple_vit, shipped weights when they exist), shared."""
    return lessons.attention_model()


@st.cache_data(show_spinner=False)
def _attention(block: int, index: int, language: str = "en"):
    """The attention lesson on shapes test image ``index`` (the shared ViT under its lock)."""
    with state.model_lock("hook_basics_attention"):
        return lessons.attention_lesson(block, index, language, model=_attention_vit())


def attention_section() -> None:
    """5 · a forward pre-hook with kwargs asks a ViT's attention for its weights."""
    st.header(t("5 · A pre-hook that changes the call: a ViT's attention weights",
                "5 · 改变调用的 pre-hook：ViT 的注意力权重"))
    st.markdown(t("torchvision's ViT calls its attention as `self_attention(x, x, x, "
                  "need_weights=False)`: the weights are never returned. A forward **pre**-hook "
                  "registered with `with_kwargs=True` receives `(module, args, kwargs)` and may "
                  "return new ones, so it can ask for `need_weights=True, "
                  "average_attn_weights=False`; a forward hook then takes the per-head weights "
                  "and hands the caller `(out, None)`, as it asked. Below: the class token's "
                  "attention over the 8×8 patches, one map per head. "
                  "`with hooklab.attention(model) as att:` does the same for every block.",
                  "torchvision 的 ViT 以 `self_attention(x, x, x, need_weights=False)` 调用注意力："
                  "权重从不返回。用 `with_kwargs=True` 注册的前向 **pre**-hook 收到 "
                  "`(module, args, kwargs)` 并可以返回新的参数，于是可以要求 `need_weights=True, "
                  "average_attn_weights=False`；随后的前向钩子取走每个头的权重，再把调用方要的 "
                  "`(out, None)` 交回。下面是类别 token 对 8×8 个图块的注意力，每个头一张图。"
                  "`with hooklab.attention(model) as att:` 对每个块做同样的事。"))
    c1, c2 = st.columns(2)
    block = c1.slider(t("Encoder block", "编码器块"), min_value=0, max_value=3, value=3,
                      key="attn_block")
    index = int(c2.number_input(t("Shapes test image", "shapes 测试图像"), min_value=0,
                                max_value=9999, value=0, key="attn_image"))
    left, right = st.columns(2)
    left.code(lessons.code("attention", lang(), block=block), language="python")
    les = state.attempt(t("Attention lesson", "注意力示例"), _attention, block, index, lang())
    if les is None:
        return
    with right:
        st.code("\n".join(les.lines), language=None)
        st.plotly_chart(attention_charts.head_maps(
            les.maps, image=les.image, image_title=t("input", "输入图像"),
            titles=[t(f"head {i + 1}", f"头 {i + 1}") for i in range(les.heads)],
            title=t(f"class token → patches, block {block}", f"类别 token → 图块，第 {block} 块")),
            width="stretch", key="attn_heads")
        ok, bad = "✓", "✗"
        st.caption(t(f"{les.model} · label {les.label}, predicted {les.prediction}",
                     f"{les.model} · 标签 {les.label}，预测 {les.prediction}"))
        st.write(f"{t('equals q, k by hand', '与 q、k 手算一致')}: "
                 f"**{ok if les.matches_by_hand else bad}** · "
                 f"{t('equals hooklab.attention', '与 hooklab.attention 一致')}: "
                 f"**{ok if les.matches_library else bad}** · "
                 f"{t('model output unchanged', '模型输出不变')}: "
                 f"**{ok if les.output_unchanged else bad}**")


def main() -> None:
    st.title(t("Hook basics", "Hook 基础"))
    st.caption(t("The course's hook lessons, run live. Each block shows the code and what it did.",
                 "课程中的钩子示例，实时运行。每一块左边是代码，右边是运行结果。"))

    opened = run_flow.open_run()
    k_default = 0.5
    if opened is not None:
        run_flow.banner(*opened)
        k_default = float(opened[1].meta.get("k", 0.5))
        run_flow.leave_button(PAGE)

    with st.expander(t("0 · Callbacks: a hook is a function PyTorch calls for you",
                       "0 · 回调：钩子就是 PyTorch 替你调用的函数"), expanded=False):
        cb = lessons.callback_lesson(lang())
        left, right = st.columns(2)
        left.code(lessons.code("callback", lang()), language="python")
        right.code("\n".join(cb.lines), language=None)

    # -- 1 forward hook -----------------------------------------------------------------------------
    st.header(t("1 · Forward hook on the conv", "1 · 卷积层上的前向钩子"))
    with state.guard(t("Forward hook", "前向钩子")):
        fwd = _forward(lang())
    left, right = st.columns(2)
    left.code(lessons.code("forward", lang()), language="python")
    with right:
        st.code("\n".join(fwd.lines), language=None)
        st.plotly_chart(charts.forward_panels(
            fwd.input_map, fwd.channel_maps,
            titles=[t("input", "输入图像"), t("channel 1", "卷积核1输出"),
                    t("channel 2", "卷积核2输出")]), width="stretch", key="fwd_panels")
        st.caption(t(f"input {tuple(fwd.input.shape)} → conv output {tuple(fwd.output.shape)}; "
                     "the handle is removed in finally.",
                     f"输入 {tuple(fwd.input.shape)} → 卷积输出 {tuple(fwd.output.shape)}；"
                     "句柄在 finally 中移除。"))

    # -- 2 backward hooks ---------------------------------------------------------------------------
    st.header(t("2 · What each backward hook receives", "2 · 各种反向钩子收到什么"))
    with state.guard(t("Backward hooks", "反向钩子")):
        bwd = _backward(lang())
    left, right = st.columns(2)
    left.code(lessons.code("backward", lang()), language="python")
    with right:
        dep, full = bwd.kinds["backward"], bwd.kinds["full_backward"]
        c1, c2 = st.columns(2)
        for col, res, title in ((c1, dep, t("deprecated register_backward_hook",
                                            "已弃用的 register_backward_hook")),
                                (c2, full, "register_full_backward_hook")):
            with col:
                st.markdown(f"**{title}**")
                st.code("\n".join(res.lines), language=None)  # what the snippet prints
                st.metric("len(grad_input)", len(res.grad_input))
                st.metric("len(grad_output)", len(res.grad_output))
                st.code("\n".join(f"{e.name}: {e.meaning} {e.shape}" for e in
                                  [*res.grad_input, *res.grad_output]), language=None)
        st.dataframe(charts.backward_kinds_table(bwd.table()), hide_index=True, width="stretch")
    st.markdown(t(bwd.explanation,
                  "已弃用的 register_backward_hook 挂在模块输出的 grad_fn 上，也就是模块内"
                  "**最后一个**自动求导操作。它的 grad_input 是这个操作输入的梯度。Conv2d 只有一个"
                  "操作，所以 grad_input = (dL/dx, dL/dW, dL/db)：三个，和课程打印的一样。多操作的模块"
                  "（x*2+1、先卷积再 relu）得到的是内部张量的梯度，数值甚至形状都不对。"
                  "register_full_backward_hook 总是给出 dL/d(模块输入) 和 dL/d(模块输出)。"))
    for demo in bwd.multi_op:
        left, right = st.columns(2)
        with left:
            st.markdown(f"**{demo.name}**: `{demo.code}`")
            if demo.name == "TwiceplusOne":
                st.code(lessons.code("multi_op", lang()), language="python")
            st.caption(demo.explanation)
        with right:
            st.plotly_chart(charts.multi_op_bars(demo.deprecated, demo.full, demo.reference),
                            width="stretch", key=f"multi_{demo.name}")
            ok = t("matches autograd", "与 autograd 一致")
            bad = t("differs from autograd", "与 autograd 不一致")
            st.write(f"deprecated: {ok if demo.deprecated_matches else bad} · "
                     f"full: {ok if demo.full_matches else bad}")

    # -- 3 tensor hook ------------------------------------------------------------------------------
    st.header(t("3 · A tensor hook that scales a gradient", "3 · 缩放梯度的张量钩子"))
    left, right = st.columns(2)
    with right:
        k = st.slider(t("Gradient factor k (the seed halves: 0.5)", "梯度因子 k（课程中减半：0.5）"),
                      min_value=0.0, max_value=2.0, value=k_default, step=0.05, key="tensor_k")
        with state.guard(t("Tensor hook", "张量钩子")):
            th = lessons.tensor_hook_lesson(k, lang=lang())
        left.code(lessons.code("tensor", lang(), k=k), language="python")  # the code that ran
        c1, c2, c3 = st.columns(3)
        c1.metric(t("hook sees dz/dy", "钩子看到的 dz/dy"), f"{th.dz_dy:g}")
        c2.metric(t("hook returns", "钩子返回"), f"{th.dz_dy_edited:g}")
        c3.metric("x.grad", f"{th.x_grad:g}", delta=f"{th.x_grad - th.x_grad_without_hook:g}")
        st.latex(r"\frac{dz}{dx} = \frac{dz}{dy}\cdot k\cdot\frac{dy}{dx} = 3y^2\cdot k\cdot 2x = "
                 f"{th.dz_dy:g}\\cdot {th.k:g}\\cdot {th.dy_dx:g} = {th.x_grad:g}")
        st.write(f"x.grad = 192 · {th.k:g} = **{th.x_grad:g}**  "
                 f"({t('without the hook', '没有钩子时')}: {th.x_grad_without_hook:g})")
        st.code("\n".join(th.lines), language=None)
        st.plotly_chart(charts.tensor_hook_bars(th.dz_dy, th.k, th.dy_dx, th.x_grad,
                                                th.x_grad_without_hook),
                        width="stretch", key="tensor_bars")

    # -- 4 forward hooks can replace ----------------------------------------------------------------
    st.header(t("4 · A forward hook can replace the output", "4 · 前向钩子可以替换输出"))
    with state.guard(t("Forward replacement", "前向替换")):
        rep = _replace()
    st.warning(t(rep.claim, "课程说前向钩子只能查看输出、不能修改。实际上，前向钩子若返回一个值，"
                            "PyTorch 就用它作为模块的输出；前向 pre-hook 返回值则替换输入。"))
    left, right = st.columns(2)
    left.code(lessons.code("replace", lang()), language="python")
    with right:
        st.plotly_chart(charts.replace_bars(rep.logits[0], rep.logits_output_replaced[0],
                                            rep.fc_bias, labels=(
                                                t("no hook", "无钩子"),
                                                t("forward hook returns zeros", "前向钩子返回零"),
                                                "fc.bias")),
                        width="stretch", key="replace_bars")
        st.write(f"{t('logits == fc.bias', 'logits == fc.bias')}: **{rep.output_replaced}** · "
                 f"{t('pre-hook: conv output == conv.bias everywhere', 'pre-hook：卷积输出处处等于 conv.bias')}"
                 f": **{rep.input_replaced}**")

    attention_section()

    # -- the recorded seed model, and saving ---------------------------------------------------------
    st.header(t("6 · The same model through hooklab's recorder", "6 · 用 hooklab 记录同一个模型"))
    if opened is not None:
        trace = opened[1]
    else:
        with state.guard(t("Recording", "记录")):
            trace = _record_seed(k)
    st.plotly_chart(trace_charts.timeline(trace.events, title=t("Hook firings (timeline)",
                                                                "钩子触发时间线")),
                    width="stretch", key="basics_timeline")
    if opened is None:
        run_flow.save_run(trace, PAGE, default_tags=("hook-basics",))

    graph_section(k)
    doctor_section()
    st.header(t("9 · Predict, then reveal", "9 · 先预测，再揭晓"))
    exercise_ui.exercise_section(PAGE)


if __name__ == "__main__":  # Streamlit runs a page as __main__; importing it runs nothing
    main()
