"""Runs written by a watch, the demo training and an exercise answer belong to the signed-in
member who made them (``by=``), as a run saved with :meth:`TraceStore.save` does: she may
change them, another member may not, and the manifest records her identity."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hooklab.store.access import Identity, LabPolicy, PermissionDenied, owner_of
from hooklab.store.runs import TraceStore
from hooklab.store.watch import watch
from hooklab.studies import exercises as ex_lib
from hooklab.studies import watch_demo

ANA = Identity(name="Ana", email="ana@lab.org", subject="sub-ana", provider="http://idp")
BEN = Identity(name="Ben", email="ben@lab.org", subject="sub-ben", provider="http://idp")
POLICY = LabPolicy.lab(["boss@lab.org"])


@pytest.fixture
def store(tmp_path):
    return TraceStore(tmp_path / "runs", durable=False, policy=POLICY)


def _owned_by_ana(store: TraceStore, rid: str) -> None:
    m = store.manifest(rid)
    assert m["author"] == ANA.label
    assert Identity.from_dict(m["author_identity"]) == ANA
    assert owner_of(m) == ANA
    with pytest.raises(PermissionDenied):
        store.update(rid, notes="Ben's now", by=BEN)
    assert store.manifest(rid)["notes"] != "Ben's now"
    assert store.update(rid, notes="Ana's edit", by=ANA)["notes"] == "Ana's edit"


def test_watch_run_is_owned_by_the_signed_in_member(store):
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch(model, store, every=1, author="typed in a box", by=ANA) as w:
        for _ in range(2):
            opt.zero_grad()
            model(torch.randn(5, 4)).sum().backward()
            opt.step()
            w.step(loss=0.0)
    _owned_by_ana(store, str(w.run_id))
    assert store.manifest(str(w.run_id))["status"] == "finished"


def test_watch_without_identity_keeps_the_given_author(store):
    model = nn.Linear(2, 2)
    with watch(model, store, every=1, author="ana-local") as w:
        model(torch.randn(1, 2)).sum().backward()
        w.step()
    m = store.manifest(str(w.run_id))
    assert m["author"] == "ana-local" and "author_identity" not in m


def test_demo_pair_runs_are_both_owned_by_the_member(store):
    ids = watch_demo.demo_pair(store, steps=2, by=ANA)
    assert len(set(ids)) == 2
    for rid in ids:
        _owned_by_ana(store, rid)


def test_exercise_answer_is_saved_under_the_identity_not_the_typed_name(store):
    ex_set = ex_lib.load_set()
    ex = ex_set.get("tensor-k")
    result = ex_lib.check(ex, 96.0)
    rid = ex_lib.save_attempt(store, ex_set, result, student="Ben", by=ANA)
    _owned_by_ana(store, rid)
    assert store.load(rid).meta["student"] == ANA.label
