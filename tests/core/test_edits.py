"""Edits are pure, serialisable and do what they say (property tests with hypothesis)."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hooklab.core import edits
from hooklab.core.errors import EditError

shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple)
settings.register_profile("hooklab", max_examples=40, deadline=None)
settings.load_profile("hooklab")


def _tensor(shape, seed, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * scale


ALL = [edits.scale(0.5), edits.clip(0.3), edits.clip_norm(1.5), edits.zero(),
       edits.channel_mask([0]), edits.noise(0.1, seed=7)]


@pytest.mark.parametrize("e", ALL, ids=str)
def test_json_round_trip_and_purity(e):
    assert edits.from_spec(json.loads(json.dumps(e.spec()))) == e
    assert edits.from_json(e.to_json()) == e
    assert edits.parse(str(e)) == e
    t = _tensor((2, 3, 4), 0)
    keep = t.clone()
    a, b = e(t), e(t)
    assert torch.equal(t, keep), "an edit must not change its argument"
    assert torch.equal(a, b), "an edit must be deterministic"


@given(shapes, st.integers(0, 10_000), st.floats(-4, 4, allow_nan=False))
def test_scale_is_exactly_k_times(shape, seed, k):
    t = _tensor(shape, seed)
    assert torch.equal(edits.scale(k)(t), t * k)


@given(shapes, st.integers(0, 10_000), st.floats(0, 5, allow_nan=False))
def test_clip_bounds(shape, seed, v):
    t = _tensor(shape, seed)
    out = edits.clip(v)(t)
    bound = float(torch.tensor(v, dtype=torch.float32))  # the bound as float32 holds it
    assert float(out.abs().max()) <= bound
    inside = t.abs() <= bound
    assert torch.equal(out[inside], t[inside])


@given(shapes, st.integers(0, 10_000), st.floats(0.01, 5, allow_nan=False))
def test_clip_norm_bound_and_direction(shape, seed, m):
    t = _tensor(shape, seed)
    out = edits.clip_norm(m)(t)
    assert float(out.norm()) <= m * (1 + 1e-5)
    if float(t.norm()) <= m:
        torch.testing.assert_close(out, t)
    else:
        torch.testing.assert_close(out / out.norm(), t / t.norm())


@given(shapes, st.integers(0, 10_000))
def test_zero_zeroes_everything(shape, seed):
    out = edits.zero()(_tensor(shape, seed))
    assert out.shape == shape and not out.any()


@given(st.integers(1, 4), st.integers(1, 8), st.integers(0, 10_000), st.data())
def test_channel_mask_zeroes_exactly_listed(n, c, seed, data):
    t = _tensor((n, c, 3, 3), seed) + 10.0  # no accidental zeros
    chans = data.draw(st.lists(st.integers(0, c - 1), unique=True, max_size=c))
    out = edits.channel_mask(chans)(t)
    for ch in range(c):
        if ch in chans:
            assert not out[:, ch].any()
        else:
            assert torch.equal(out[:, ch], t[:, ch])


def test_noise_statistics_and_seed():
    t = torch.zeros(200_000)
    a = edits.noise(0.5, seed=1)(t)
    assert abs(float(a.std()) - 0.5) < 0.01 and abs(float(a.mean())) < 0.01
    assert not torch.equal(a, edits.noise(0.5, seed=2)(t))


@pytest.mark.parametrize("bad", ["scale(", "explode(1)", "scale(__import__('os'))", "1+1",
                                 '{"name": "scale"}', '{"name": "nope"}', "clip(-1)", "scale('x')", "noise(std=[1])"])
def test_bad_specs_are_edit_errors(bad):
    with pytest.raises(EditError):
        edits.parse(bad)


def test_channel_mask_out_of_range():
    with pytest.raises(EditError, match="out of range"):
        edits.channel_mask([5])(torch.ones(1, 3, 2, 2))


def test_halve_alias():
    assert edits.parse("halve") == edits.scale(0.5)
