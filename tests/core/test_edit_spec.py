"""EditSpec's text is the one text of an edit; parse is its exact inverse; normalise_edits
accepts every form users pass."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hooklab.core import edits
from hooklab.core.edits import EditSpec, describe, normalise_edits
from hooklab.core.errors import EditError

ALL = [edits.scale(0.5), edits.scale(-2.0), edits.clip(0.3), edits.clip_norm(1.5), edits.zero(),
       edits.channel_mask([0, 3]), edits.noise(0.1, seed=7)]
LAYERS = ["conv2", "block.0", "layer4.1.conv2", "0", "fc1.weight"]


@pytest.mark.parametrize("target", edits.TARGETS)
@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("e", ALL, ids=str)
def test_text_round_trip(e, layer, target):
    spec = EditSpec(layer, e, target)
    text = str(spec)
    assert EditSpec.parse(text) == spec
    assert text == (f"{layer}={e}" if target == "grad" else f"{layer}={e}@{target}")
    assert str(EditSpec.parse(text)) == text


@given(st.floats(allow_nan=False, allow_infinity=False, width=32),
       st.from_regex(r"[a-z][a-z0-9_]{0,6}(\.[0-9a-z_]{1,4}){0,3}", fullmatch=True),
       st.sampled_from(edits.TARGETS))
def test_text_round_trip_property(k, layer, target):
    spec = EditSpec(layer, edits.scale(k), target)
    assert EditSpec.parse(str(spec)) == spec


def test_text_forms():
    assert str(EditSpec("conv2", edits.scale(0.5))) == "conv2=scale(0.5)"
    assert str(EditSpec("conv2", edits.zero(), "activation")) == "conv2=zero()@activation"
    # the CLI's older LAYER:TARGET=EDIT and its --edit-target default stay accepted
    assert EditSpec.parse("conv2:activation=zero()") == EditSpec("conv2", edits.zero(),
                                                                 "activation")
    assert EditSpec.parse("conv2=halve", target="param_grad") == EditSpec(
        "conv2", edits.scale(0.5), "param_grad")
    assert EditSpec.parse("n=noise(0.1, seed=2)") == EditSpec("n", edits.noise(0.1, 2))
    for bad in ("scale(0.5)", "=scale(0.5)", "conv2=scale(0.5)@weights", "conv2=bogus(1)"):
        with pytest.raises(EditError):
            EditSpec.parse(bad)


def test_recorder_re_exports_the_core_class():
    from hooklab.recording import EditSpec as A
    from hooklab.recording.recorder import EditSpec as B

    assert A is EditSpec and B is EditSpec


def test_normalise_every_form():
    want = [EditSpec("block.0", edits.scale(0.5)), EditSpec("fc", edits.zero(), "activation")]
    specs = [s.spec() for s in want]
    forms = [
        want,
        specs,
        json.dumps(specs),
        [str(s) for s in want],
        "; ".join(str(s) for s in want),
        "\n".join(str(s) for s in want),
        {"block.0": edits.scale(0.5), "fc": {"edit": "zero()", "target": "activation"}},
        [want[0], str(want[1])],
    ]
    for form in forms:
        assert normalise_edits(form) == want, form
    assert normalise_edits({"block.0": "scale(0.5)"}) == want[:1]
    assert normalise_edits({"fc": "zero()@activation"}) == want[1:]
    assert normalise_edits({"block.0": {"name": "scale", "k": 0.5}}) == want[:1]
    assert normalise_edits(specs[0]) == want[:1]  # one stored spec
    assert normalise_edits(want[0]) == want[:1]
    for empty in (None, [], {}, "", " "):
        assert normalise_edits(empty) == []
    with pytest.raises(EditError):
        normalise_edits({"conv2": "scale('x')"})
    with pytest.raises(EditError):
        normalise_edits([42])
    with pytest.raises(EditError):
        normalise_edits(3.5)


def test_describe():
    assert describe(None) == "" and describe([]) == ""
    assert describe({"block.0": edits.scale(0.5)}) == "block.0=scale(0.5)"
    both = [EditSpec("a", edits.zero()), EditSpec("b.1", edits.clip(1.0), "param_grad")]
    assert describe(both) == "a=zero(); b.1=clip(1.0)@param_grad"
    assert describe(describe(both)) == describe(both)  # text in, same text out
    # a run from another version: shown as written, never raised
    assert describe("custom") == "custom"
    assert describe([{"layer": "x", "edit": {"name": "warp", "k": 2}}]) == "x=warp(2)"
