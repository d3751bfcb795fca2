"""Fused statistics kernels in C (``_kernels.c``), built at first use and loaded with ctypes.

The recorder summarises every tensor it sees; in torch that takes four reductions (``aminmax``,
``sum``, ``dot``, ``ne``), each a pass over memory. :func:`kernels` gives one pass instead:
``_kernels.c`` is compiled once per machine with the C compiler on ``PATH`` (``$CC``, else
``cc``/``gcc``/``clang``; ``-O3 -march=native -fopenmp``, vectorised; a large tensor is cut
into fixed parts run on torch's OpenMP threads, so a result never depends on the thread count)
into a cache
folder and loaded with :mod:`ctypes` (no Python or torch headers). Nothing is downloaded.

Where no compiler is found, the build fails or ``HOOKLAB_NATIVE=0`` is set, :func:`kernels`
returns ``None`` and every caller takes its torch path: the results are the same statistics
(float32 block sums added in float64 either way; the tests compare both paths to float64).

Cache folder: ``$HOOKLAB_NATIVE_CACHE``, else ``$XDG_CACHE_HOME/hooklab/native`` (default
``~/.cache/hooklab/native``), else a folder in the temp directory. The library's file name holds
a hash of the source, the flags, the compiler and this CPU's model and flags, so a home folder
shared by machines with different CPUs never loads a library built for another CPU.

Example:
    >>> k = kernels()
    >>> k is None or k.moments(torch.tensor([0.0, 3.0, 4.0]))[1]
    25.0
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

__all__ = ["Kernels", "accepts", "kernels", "native_status", "reset"]

log = logging.getLogger(__name__)

#: Set to ``0`` to use the torch reductions only.
ENABLE_ENV = "HOOKLAB_NATIVE"
#: The folder the built library is cached in.
CACHE_ENV = "HOOKLAB_NATIVE_CACHE"

_SOURCE = Path(__file__).with_name("_kernels.c")
_FLAGS = ["-O3", "-fopenmp-simd", "-fno-math-errno", "-fPIC", "-shared"]
# -fopenmp links libgomp.so.1: the one torch has loaded already (same soname), so a large
# tensor's parts run on torch's own worker threads; each fallback drops one option
_VARIANTS = [["-march=native", "-fopenmp"], ["-fopenmp"], ["-march=native"], []]
_VOIDP, _I64 = ctypes.c_void_p, ctypes.c_int64


class Kernels:
    """The loaded library. Every tensor argument is a contiguous float32 CPU tensor (the
    callers check); the calls release the GIL."""

    def __init__(self, lib: ctypes.CDLL, path: Path) -> None:
        self.path = path
        self._moments = lib.hl_moments
        self._moments.argtypes = [_VOIDP, _VOIDP, _I64, _VOIDP, ctypes.c_int]
        self._moments.restype = None
        self._moments_many = lib.hl_moments_many
        self._moments_many.argtypes = [_VOIDP, _VOIDP, _I64, _VOIDP, ctypes.c_int]
        self._moments_many.restype = None
        self._alive = lib.hl_alive_units
        self._alive.argtypes = [_VOIDP, _I64, _I64, _I64, _VOIDP]
        self._alive.restype = None
        self._copy_sumsq = lib.hl_copy_sumsq
        self._copy_sumsq.argtypes = [_VOIDP, _VOIDP, _I64]
        self._copy_sumsq.restype = ctypes.c_double
        self._diff_copy = lib.hl_diff_copy
        self._diff_copy.argtypes = [_VOIDP, _VOIDP, _I64, _VOIDP, ctypes.c_int]
        self._diff_copy.restype = None
        self._diff_copy_many = lib.hl_diff_copy_many
        self._diff_copy_many.argtypes = [_VOIDP, _VOIDP, _VOIDP, _I64, _VOIDP, ctypes.c_int]
        self._diff_copy_many.restype = None
        self._check = lib.hl_moments_check
        self._check.argtypes = [_VOIDP, _I64, _VOIDP, ctypes.c_int]
        self._check.restype = ctypes.c_int
        self._out = threading.local()

    def _buf(self) -> ctypes.Array[ctypes.c_double]:
        out = getattr(self._out, "buf", None)
        if out is None:
            out = self._out.buf = (ctypes.c_double * 5)()
        return out

    def moments(self, x: torch.Tensor, dst: torch.Tensor | None = None) -> list[float]:
        """[sum, sum of squares, min, max, nonzero count] of ``x`` in one pass; with ``dst``
        (as many elements) ``x`` is also copied into it."""
        out = self._buf()
        self._moments(x.data_ptr(), None if dst is None else dst.data_ptr(), x.numel(), out,
                      torch.get_num_threads())
        return list(out)

    def moments_into(self, x: torch.Tensor, out: ctypes.Array[ctypes.c_double]) -> bool:
        """:meth:`moments` of a non-empty ``x`` written into ``out`` (five doubles); returns
        whether the statistics need ``x`` read again (a non-finite moment or a cancelling
        variance, tested a little more widely than :mod:`hooklab.core.stats` does)."""
        return bool(self._check(x.data_ptr(), x.numel(), out, torch.get_num_threads()))

    def moments_many(self, xs: list[torch.Tensor]) -> list[list[float]]:
        """:meth:`moments` of each tensor of ``xs``, in one call (the same values)."""
        count = len(xs)
        if not count:
            return []
        ptrs = (_VOIDP * count)(*[x.data_ptr() for x in xs])
        ns = (_I64 * count)(*[x.numel() for x in xs])
        out = (ctypes.c_double * (5 * count))()
        self._moments_many(ptrs, ns, count, out, torch.get_num_threads())
        flat = list(out)
        return [flat[5 * i: 5 * i + 5] for i in range(count)]

    def alive_units(self, x: torch.Tensor, alive: torch.Tensor) -> None:
        """``alive[c] |= any(x[:, c] != 0)`` for a contiguous ``x`` of two or more dims and a
        contiguous uint8 ``alive`` of ``x.shape[1]`` elements (updated in place)."""
        n, c = x.shape[0], x.shape[1]
        inner = x.numel() // (n * c) if n * c else 0
        self._alive(x.data_ptr(), n, c, inner, alive.data_ptr())

    def copy_sumsq(self, src: torch.Tensor, dst: torch.Tensor) -> float:
        """Copy ``src`` into ``dst`` and return the sum of squares of ``src``."""
        return float(self._copy_sumsq(src.data_ptr(), dst.data_ptr(), src.numel()))

    def diff_copy(self, before: torch.Tensor, now: torch.Tensor) -> tuple[float, float]:
        """(sum of squares of ``before - now``, sum of squares of ``now``), then
        ``before = now``: one step's update and the next step's snapshot in one pass."""
        out = self._buf()
        self._diff_copy(before.data_ptr(), now.data_ptr(), now.numel(), out,
                        torch.get_num_threads())
        return float(out[0]), float(out[1])

    def diff_copy_many(self, befores: list[torch.Tensor], nows: list[torch.Tensor]
                       ) -> list[tuple[float, float]]:
        """:meth:`diff_copy` of each pair, in one call (the same values)."""
        count = len(nows)
        if not count:
            return []
        bs = (_VOIDP * count)(*[b.data_ptr() for b in befores])
        ps = (_VOIDP * count)(*[p.data_ptr() for p in nows])
        ns = (_I64 * count)(*[p.numel() for p in nows])
        out = (ctypes.c_double * (2 * count))()
        self._diff_copy_many(bs, ps, ns, count, out, torch.get_num_threads())
        flat = list(out)
        return [(flat[2 * i], flat[2 * i + 1]) for i in range(count)]


def accepts(t: torch.Tensor) -> bool:
    """Whether the kernels take ``t`` as it is: a strided, contiguous float32 CPU tensor (a
    sparse one is not; checked first, as ``is_contiguous`` raises for it). Called in hooks on
    every recorded tensor, so each test is the cheapest torch has."""
    return (t.layout is torch.strided and t.is_cpu and t.dtype is torch.float32
            and t.is_contiguous())


_lock = threading.Lock()
_state: dict[str, object] = {}


def _cache_dirs() -> list[Path]:
    env = os.environ.get(CACHE_ENV)
    if env:
        return [Path(env).expanduser()]
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return [Path(xdg) / "hooklab" / "native",
            Path(tempfile.gettempdir()) / f"hooklab-native-{os.getuid()}"]


def _compiler() -> str | None:
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return cc
    return None


def _cpu_signature() -> str:
    """This CPU's model and feature flags (what ``-march=native`` compiles for)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    keep = [ln for ln in lines if ln.startswith(("model name", "flags", "Features", "CPU part"))]
    return "\n".join(sorted(set(keep)))


def _build(cc: str, out_dir: Path) -> Path:
    source = _SOURCE.read_bytes()
    exe = shutil.which(cc) or cc
    try:  # the compiler by its resolved file (no process started to ask its version)
        st = os.stat(os.path.realpath(exe))
        version = f"{os.path.realpath(exe)}:{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        version = exe
    key = hashlib.sha256(b"\0".join([source, repr((_FLAGS, _VARIANTS)).encode(),
                                     version.encode(), _cpu_signature().encode(),
                                     platform.machine().encode()])).hexdigest()[:16]
    target = out_dir / f"hooklab_kernels-{key}.so"
    if target.exists():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    errors = []
    for arch in _VARIANTS:  # a compiler without -march=native or OpenMP still builds
        fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=out_dir)
        os.close(fd)
        try:
            proc = subprocess.run([cc, *_FLAGS, *arch, str(_SOURCE), "-o", tmp, "-lm"],
                                  capture_output=True, text=True, timeout=120)
            if proc.returncode == 0:
                os.replace(tmp, target)  # atomic: a concurrent build loads a whole file
                return target
            errors.append(proc.stderr.strip()[-500:])
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise RuntimeError(f"{cc} failed: {' | '.join(errors)}")


def _load() -> tuple[Kernels | None, str]:
    if os.environ.get(ENABLE_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return None, f"off ({ENABLE_ENV}=0): torch reductions"
    cc = _compiler()
    if cc is None:
        return None, "no C compiler on PATH: torch reductions"
    problems = []
    for d in _cache_dirs():
        try:
            path = _build(cc, d)
            return Kernels(ctypes.CDLL(str(path)), path), f"fused C kernels ({cc}, {path})"
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            problems.append(f"{d}: {exc}")
    msg = "; ".join(problems)
    log.warning("hooklab: native statistics kernels unavailable, using torch: %s", msg)
    return None, f"build failed ({msg}): torch reductions"


def kernels() -> Kernels | None:
    """The fused kernels, built and loaded on the first call; ``None`` where unavailable."""
    k = _state.get("kernels", False)
    if k is not False:
        return k  # type: ignore[return-value]
    with _lock:
        if "kernels" not in _state:
            _state["kernels"], _state["status"] = _load()
    return _state["kernels"]  # type: ignore[return-value]


def native_status() -> str:
    """One line: which statistics path this process uses, and why."""
    kernels()
    return str(_state["status"])


def reset() -> None:
    """Forget the loaded state: the next :func:`kernels` call reads ``HOOKLAB_NATIVE`` again
    (tests switch between the native and the torch path)."""
    with _lock:
        _state.clear()
