"""Train ``lab_resnet`` on hooklab's shapes training split and write ``lab_resnet.safetensors``.

Deterministic for a given machine and torch (seed 0, one thread); the shipped file is the one
the tests use, so the same bytes are read on every machine. Run from the repository root:

    .venv/bin/python examples/hooklab_example_lab/make_weights.py
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hooklab_example_lab.models import WEIGHTS, LabResNet  # noqa: E402

from hooklab.data.datasets import make_shapes  # noqa: E402
from hooklab.models.weights import save_safetensors  # noqa: E402

log = logging.getLogger("make_weights")

TRAIN, TEST, EPOCHS, BATCH, LR = 4096, 1000, 4, 64, 3e-3


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    train, test = make_shapes(TRAIN, split="train"), make_shapes(TEST, split="test")
    model = LabResNet()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    g = torch.Generator().manual_seed(0)
    for epoch in range(EPOCHS):
        model.train()
        order = torch.randperm(TRAIN, generator=g)
        for i in range(0, TRAIN, BATCH):
            idx = order[i:i + BATCH]
            loss = F.cross_entropy(model(train.images[idx]), train.labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = (model(test.images).argmax(1) == test.labels).float().mean().item()
        log.info("epoch %d: last loss %.3f, shapes test accuracy %.3f", epoch + 1, loss.item(), acc)
    save_safetensors(model, WEIGHTS, metadata={"test_accuracy": f"{acc:.4f}",
                                                "recipe": f"Adam lr={LR} batch={BATCH} "
                                                          f"epochs={EPOCHS} train={TRAIN} seed=0"})
    log.info("wrote %s (%d bytes)", WEIGHTS, WEIGHTS.stat().st_size)


if __name__ == "__main__":
    main()
