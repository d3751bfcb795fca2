"""hooklab.charts.notebook: Trace.plot(kind) draws the Inspector's own figures, WatchRun.plot(kind)
the Training page's, and a WatchRun summarises itself in HTML."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hooklab
from hooklab.charts import notebook as nb
from hooklab.charts import trace as T
from hooklab.charts import training as TR
from hooklab.core.display import DisplayError, events_summary
from hooklab.models.zoo import SimpleModel
from hooklab.store.stream import open_watch
from hooklab.studies import training_views as TV
from hooklab.studies.inspect import partner
from tests.conftest import hook_counts


@pytest.fixture(scope="module")
def recorded():
    torch.manual_seed(0)
    model = SimpleModel().eval()
    before = hook_counts(model)
    with hooklab.record(model, edits={"conv": hooklab.core.edits.scale(0.5)}) as rec:
        rec.run(torch.randn(2, 1, 4, 4))
    with hooklab.record(model, layers="conv", keep_tensors=False) as stats_only:
        stats_only.run(torch.randn(1, 1, 4, 4))
    assert hook_counts(model) == before, "a hook was left behind"
    return rec.trace, stats_only.trace


def test_channels_is_the_inspector_event_view(recorded):
    trace, _ = recorded
    row = trace.select(layer="conv", role="output").iloc[0]
    want = T.channel_maps(trace.tensor(row["key"]), title=T.event_label(row))
    assert trace.plot("channels", layer="conv").to_json() == want.to_json()
    # the filters pick the event: the edited gradient, not the output
    edited = trace.select(layer="conv", role="edited").iloc[0]
    fig = trace.plot("channels", layer="conv", role="edited")
    assert fig.to_json() == T.channel_maps(trace.tensor(edited["key"]),
                                           title=T.event_label(edited)).to_json()


def test_histogram_and_pair_are_the_inspector_figures(recorded):
    trace, _ = recorded
    row = trace.select(layer="conv", role="output").iloc[0]
    assert (trace.plot("histogram", layer="conv").to_json()
            == T.histogram(trace.tensor(row["key"]), title="output").to_json())
    act, grad = partner(trace, row, "output"), partner(trace, row, "grad_output")
    assert act is not None and grad is not None
    # partner gives the gradient before the edit: twice the edited one
    edited = trace.find(layer="conv", role="edited")
    torch.testing.assert_close(edited, 0.5 * grad)
    assert (trace.plot("pair", layer="conv", channel=1).to_json()
            == T.tensor_pair(act, grad, channel=1).to_json())


def test_bad_selections_say_what_is_there(recorded):
    trace, stats_only = recorded
    with pytest.raises(KeyError) as err:
        trace.plot("channels", layer="conv9")
    assert "'conv9'" in str(err.value)
    assert str(err.value).endswith("layers in this trace: conv, relu, fc\"")
    with pytest.raises(KeyError, match="statistics only"):
        stats_only.plot("channels", layer="conv")
    with pytest.raises(TypeError, match="unknown event filter"):
        nb.pick_event(trace, layer="conv", colour="red")
    with pytest.raises(TypeError):
        trace.plot("channels")  # layer is required


# -- watch runs ----------------------------------------------------------------------------------
def _train(store, edits=None, steps=6, tags=("nb",)):
    """A few watched steps of the seed's SimpleModel (same seed and batches every call)."""
    torch.manual_seed(0)
    model = SimpleModel().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    xs, ys = torch.randn(steps, 4, 1, 4, 4, generator=g), torch.randint(0, 10, (steps, 4),
                                                                         generator=g)
    before = hook_counts(model)
    losses = []
    with hooklab.watch(model, store, every=1, edits=edits, tags=list(tags), author="nb") as w:
        for x, y in zip(xs, ys, strict=True):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            w.step(loss=loss.item())
    assert hook_counts(model) == before, "a hook was left behind"
    return open_watch(store, w.run_id), losses


@pytest.fixture(scope="module")
def watched(tmp_path_factory):
    store = hooklab.TraceStore(tmp_path_factory.mktemp("watch"))
    plain, losses = _train(store)
    halved, _ = _train(store, edits={"relu": hooklab.core.edits.scale(0.5)},
                       tags=("<script>x</script>",))
    return plain, halved, losses, store


def test_watch_summary_says_what_the_run_holds(watched):
    plain, halved, losses, _ = watched
    s = plain.summary()
    assert s["run"] == plain.run_id and s["status"] == "finished"
    assert s["events"] == len(plain.events) > 0
    assert s["steps recorded"] == "6 (0..5, every 1) of 6 trained"
    assert s["last scalars"] == {"loss": f"{losses[-1]:.4g} (step 5)"}
    assert s["edits"] == "none" and halved.summary()["edits"] == "relu=scale(0.5)"
    assert s["first NaN/Inf"] == "none"
    html = halved._repr_html_()
    assert "hooklab WatchRun" in html and f">{len(halved.events)}</td>" in html
    assert "<script>" not in html and "&lt;script&gt;x&lt;/script&gt;" in html


def test_watch_plots_are_the_training_page_figures(watched):
    plain, halved, _, _ = watched
    assert plain.plot().to_json() == TR.grad_norm_heatmap(plain.events, "grad_output").to_json()
    assert (plain.plot("heatmap", role="param_grad").to_json()
            == TR.grad_norm_heatmap(plain.events, "param_grad").to_json())
    assert plain.plot("scalars").to_json() == TR.scalar_curves(plain.scalars).to_json()
    assert (plain.plot("update_ratio").to_json()
            == TR.update_ratio_lines(plain.scalars).to_json())
    assert plain.plot("dead").to_json() == TR.dead_fraction_heatmap(plain.scalars).to_json()
    fig = halved.plot("ratio", baseline=plain)
    assert fig.to_json() == TR.ratio_heatmap(plain.events, halved.events, "grad_output",
                                             names=(plain.run_id, halved.run_id)).to_json()
    with pytest.raises(DisplayError, match="known: heatmap, scalars, update_ratio, dead, ratio"):
        plain.plot("timeline")


def test_watch_ratio_shows_the_halving_upstream(watched):
    plain, halved, _, _ = watched
    # step 0: same weights and batch; halving relu's output gradient halves conv's (upstream)
    ratio = TV.ratio_matrix(plain.events, halved.events, "grad_output")
    assert ratio.loc["conv", 0] == pytest.approx(0.5, rel=1e-5)
    assert ratio.loc["fc", 0] == pytest.approx(1.0, rel=1e-6)  # downstream: unchanged
    z = halved.plot("ratio", baseline=plain).data[0].z
    layers = list(halved.plot("ratio", baseline=plain).data[0].y)
    assert float(z[layers.index("conv")][0]) == pytest.approx(np.log10(0.5), abs=1e-5)


def test_watch_summary_of_a_run_opened_with_some_columns(watched):
    plain, _, _, store = watched
    # the Training page's columns: everything the summary and the heatmap need but the phase
    page = open_watch(store, plain.run_id, columns=TV.TRAINING_COLUMNS)
    s = page.summary()
    assert s["events"] == len(plain.events) and s["by role"] == plain.summary()["by role"]
    assert s["first NaN/Inf"] == "none"
    assert page.plot().to_json() == plain.plot().to_json()
    assert "by phase" in plain.trace().summary() and "by phase" not in events_summary(
        page.events, page.meta)
    fewer = open_watch(store, plain.run_id, columns=["seq", "step", "layer", "role", "norm"])
    assert fewer.summary()["first NaN/Inf"] == "—"
    assert f">{len(plain.events)}</td>" in fewer._repr_html_()
