"""Time of the input guards and generators the tests check by behaviour (not by the clock):

  shapes    make_shapes(2000): against drawing the same number of float32 pixels with numpy
  bomb      refusing a 30000 x 30000 PNG (header only) against loading a 64 x 64 PNG
  truncated refusing a truncated PNG against loading the same image whole

Medians of interleaved repeats, as ratios to the baseline measured in the same process.
Usage: .venv/bin/python benchmarks/bench_inputs.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import io
import statistics
import struct
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_line  # noqa: E402
from PIL import Image  # noqa: E402

from hooklab.core.errors import ImageError  # noqa: E402
from hooklab.data import datasets as data  # noqa: E402
from hooklab.data.images import load_image  # noqa: E402


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _bomb(side: int = 30_000) -> bytes:
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
            + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b""))


def _refused(payload: bytes) -> Callable[[], None]:
    def run() -> None:
        try:
            load_image(payload, size=(32, 32))
        except ImageError:
            return
        raise AssertionError("not refused")
    return run


def _median(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    print(machine_line(), flush=True)

    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buf, format="PNG")
    png = buf.getvalue()

    def shapes() -> None:
        data._chunk.cache_clear()  # generate, do not reuse the cache
        data.make_shapes(2000, seed=12345)

    def pixels() -> None:
        import numpy as np
        np.random.default_rng(0).standard_normal((2000, 3, 32, 32), dtype=np.float32)

    cases = {"shapes": (shapes, pixels),
             "bomb": (_refused(_bomb()), lambda: load_image(png, size=(32, 32))),
             "truncated": (_refused(png[:400]), lambda: load_image(png, size=(32, 32)))}
    print(f"{'case':<10} {'seconds':>9} {'baseline':>9} {'ratio':>7}")
    for name, (fn, base) in cases.items():
        fn(), base()  # warm up
        t, b = _median(fn, args.repeats), _median(base, args.repeats)
        print(f"{name:<10} {t:9.4f} {b:9.4f} {t / b:7.2f}")


if __name__ == "__main__":
    main()
