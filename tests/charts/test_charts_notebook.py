"""hooklab.charts.notebook: Trace.plot(kind) draws the Inspector's own figures."""

from __future__ import annotations

import pytest
import torch

import hooklab
from hooklab.charts import notebook as nb
from hooklab.charts import trace as T
from hooklab.models.zoo import SimpleModel
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
