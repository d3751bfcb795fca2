"""Issue 11: a run recorded in a notebook with ``edits={"block.0": edits.scale(0.5)}`` reads
``block.0=scale(0.5)`` in the stored manifest, the store listing, the Runs table, the compare
text and the Inspector's banner (all :func:`hooklab.core.edits.describe`)."""

from __future__ import annotations

import torch
from torch import nn

import hooklab
from hooklab.charts import runs as chart_runs
from hooklab.core import edits
from hooklab.core.edits import describe
from hooklab.store.runs import TraceStore, summarise_edits
from hooklab.studies.compare import config_text


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(x))


def test_notebook_run_reads_the_same_everywhere(tmp_path):
    torch.manual_seed(0)
    model = Net()
    with hooklab.record(model, ["block.0"], edits={"block.0": edits.scale(0.5)}) as rec:
        rec.run(torch.randn(3, 4))
    store = TraceStore(tmp_path / "runs", durable=False)
    rid = store.save(rec.trace, notes="notebook")
    meta = store.manifest(rid)["meta"]
    assert meta["edits"] == [{"layer": "block.0", "target": "grad",
                              "edit": {"name": "scale", "k": 0.5}}]
    want = "block.0=scale(0.5)"
    assert describe(meta["edits"]) == want
    assert describe(store.load(rid).meta["edits"]) == want
    assert summarise_edits(meta["edits"]) == want
    listing = store.list()
    assert listing.loc[listing["run_id"] == rid, "edits"].item() == want
    table = chart_runs.runs_table(listing)
    assert table.loc[table["run_id"] == rid, "edits"].item() == want
    assert chart_runs.edits_text(meta["edits"]) == want
    assert config_text(meta["edits"]) == want
    # and the text goes back to the same edits
    assert hooklab.core.edits.normalise_edits(want) == \
        hooklab.core.edits.normalise_edits(meta["edits"])


def test_no_edit_is_empty_everywhere(tmp_path):
    model = Net()
    with hooklab.record(model, ["block.0"]) as rec:
        rec.run(torch.randn(2, 4))
    store = TraceStore(tmp_path / "runs", durable=False)
    rid = store.save(rec.trace)
    meta = store.manifest(rid)["meta"]
    assert describe(meta["edits"]) == summarise_edits(meta["edits"]) == ""
    assert chart_runs.edits_text(meta["edits"]) == ""
    assert store.list()["edits"].tolist() == [""]
