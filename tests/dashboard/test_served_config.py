"""The served app's hardening in .streamlit/config.toml, as Streamlit itself reads it.

Bound to 127.0.0.1, XSRF protection and CORS protection on, WebSocket Host names limited, and an
upload limit that fits the largest file a user uploads here (the biggest zoo model's weights,
measured on the meta device, and a run zip at the recorder's tensor budget). The served upload
with XSRF on is tested in the browser (tests/e2e/test_text_browser.py).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch
import torchvision.models as tvm

from hooklab.models.zoo import TORCHVISION_MODELS
from hooklab.recording.recorder import DEFAULT_MAX_BYTES

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / ".streamlit" / "config.toml"


@pytest.fixture
def options(monkeypatch):
    """Streamlit's options as parsed from the project's config (the server's working
    directory is the project root), restored to a fresh parse afterwards."""
    from streamlit import config

    monkeypatch.chdir(ROOT)
    config.get_config_options(force_reparse=True)
    yield config.get_option
    config.get_config_options(force_reparse=True)


def test_config_binds_localhost_and_protects(options):
    server = tomllib.loads(CONFIG.read_text())["server"]
    assert server["address"] == "127.0.0.1"
    assert server["enableXsrfProtection"] is True and server["enableCORS"] is True
    assert options("server.address") == "127.0.0.1"
    assert options("server.enableXsrfProtection") is True
    assert options("server.enableCORS") is True
    assert options("server.fileWatcherType") == "none"
    hosts = options("server.allowedHosts")
    assert {"localhost", "127.0.0.1"} <= set(hosts) and "*" not in hosts


def _weights_bytes(name: str) -> int:
    with torch.device("meta"):  # sizes only: nothing is allocated
        model = getattr(tvm, name)()
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def test_upload_limit_fits_the_largest_upload(options):
    limit = int(options("server.maxUploadSize")) * 2**20  # Streamlit: MiB (x 1024 x 1024)
    largest = max(_weights_bytes(n) for n in TORCHVISION_MODELS)
    assert largest + 2**20 <= limit, (largest, limit)  # + a .pth/.safetensors header
    assert DEFAULT_MAX_BYTES + 16 * 2**20 <= limit  # a run zip at the tensor budget
    assert limit <= 2 * largest  # not the 200 MB default plus arbitrary headroom either
