"""Store safety: unsafe run ids, zip slip, tampered or damaged runs, never harming stored runs."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest

from hooklab.core.errors import CorruptRunError, HooklabError, StoreError
from hooklab.store.runs import TraceStore
from hooklab.testing.store_stress import synthetic_trace

UNSAFE_IDS = ["../x", "..", ".", "/etc/passwd", "a/b", "a\\b", "a\x00b", "", ".trash",
              ".tmp-x", "x" * 101, "ab\n", "../../../../tmp/evil", "C:evil", 5, 1.5]


@pytest.fixture
def store(tmp_path) -> TraceStore:
    return TraceStore(tmp_path / "runs", durable=False)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its content (to show nothing was harmed)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("bad", UNSAFE_IDS)
def test_unsafe_run_ids_are_refused_everywhere(store, tmp_path, bad):
    rid = store.save(synthetic_trace(2, 8))
    before = snapshot(tmp_path)
    calls = [lambda: store.load(bad), lambda: store.events(bad), lambda: store.manifest(bad),
             lambda: store.delete(bad), lambda: store.restore(bad), lambda: store.export(bad),
             lambda: store.update(bad, notes="x"), lambda: store.purge(bad),
             lambda: store.save(synthetic_trace(1, 4), run_id=bad),
             lambda: store.query(run_ids=[bad])]
    for call in calls:
        with pytest.raises(StoreError, match="invalid run id"):
            call()
    assert snapshot(tmp_path) == before
    assert store.list()["run_id"].tolist() == [rid]


def test_symlinked_run_outside_root_is_not_followed(store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "manifest.json").write_text("{}")
    os.symlink(outside, store.root / "sneaky")
    assert store.list().empty
    with pytest.raises(CorruptRunError, match="symbolic link"):
        store.load("sneaky")


def test_symlinked_data_file_is_refused(store, tmp_path):
    rid = store.save(synthetic_trace(2, 8))
    secret = tmp_path / "secret.bin"
    tensors = store.root / rid / "tensors.safetensors"
    secret.write_bytes(tensors.read_bytes())
    tensors.unlink()
    os.symlink(secret, tensors)
    with pytest.raises(CorruptRunError, match="not a regular file"):
        store.load(rid)
    with pytest.raises(CorruptRunError):
        store.export(rid, tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()


# -- damaged runs in the store ---------------------------------------------------------------
def _damage(path: Path, how: str) -> None:
    m = path / "manifest.json"
    if how == "missing_events":
        (path / "events.parquet").unlink()
    elif how == "truncated_tensors":
        t = path / "tensors.safetensors"
        t.write_bytes(t.read_bytes()[:-10])
    elif how == "flipped_byte":
        t = path / "tensors.safetensors"
        data = bytearray(t.read_bytes())
        data[-1] ^= 0xFF
        t.write_bytes(bytes(data))
    elif how == "bad_json":
        m.write_text("{not json")
    elif how == "unknown_version":
        d = json.loads(m.read_text())
        d["format_version"] = 99
        m.write_text(json.dumps(d))
    elif how == "wrong_run_id":
        d = json.loads(m.read_text())
        d["run_id"] = "someone-else"
        m.write_text(json.dumps(d))
    elif how == "no_manifest":
        m.unlink()
    elif how == "lying_header":
        # a re-hashed tensors file whose header points two tensors at the same bytes
        import hashlib
        import struct
        t = path / "tensors.safetensors"
        raw = t.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        keys = [k for k in header if k != "__metadata__"]
        header[keys[1]]["data_offsets"] = header[keys[0]]["data_offsets"]
        hb = json.dumps(header).encode()
        hb += b" " * (-len(hb) % 8)
        data = struct.pack("<Q", len(hb)) + hb + raw[8 + n:]
        t.write_bytes(data)
        d = json.loads(m.read_text())
        d["files"]["tensors.safetensors"] = {"sha256": hashlib.sha256(data).hexdigest(),
                                             "bytes": len(data)}
        m.write_text(json.dumps(d))
    elif how == "garbage_parquet":
        # a consistent manifest around an unreadable Parquet file
        e = path / "events.parquet"
        e.write_bytes(b"PAR1 garbage")
        import hashlib
        d = json.loads(m.read_text())
        d["files"]["events.parquet"] = {"sha256": hashlib.sha256(b"PAR1 garbage").hexdigest(),
                                        "bytes": 12}
        m.write_text(json.dumps(d))


DAMAGE = {"missing_events": "events.parquet is missing", "truncated_tensors": "bytes",
          "flipped_byte": "sha256", "bad_json": "not valid JSON",
          "unknown_version": "unknown format version 99", "wrong_run_id": "names run",
          "no_manifest": "manifest.json is missing", "garbage_parquet": "unreadable",
          "lying_header": "tensors.safetensors"}


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_damaged_run_is_a_clear_error_and_listing_survives(store, how):
    good = store.save(synthetic_trace(2, 8, seed=1))
    bad = store.save(synthetic_trace(2, 8, seed=2))
    _damage(store.root / bad, how)
    with pytest.raises(CorruptRunError, match=DAMAGE[how]) as info:
        store.load(bad)
    assert bad in str(info.value)
    df = store.list().set_index("run_id")
    assert df.loc[good, "status"] == "ok"
    if how != "flipped_byte":  # listing checks sizes, not hashes (that needs reading it all)
        assert df.loc[bad, "status"].startswith("corrupt: ")
    assert set(store.query(role="output")["run_id"]) <= {good, bad}
    assert good in set(store.query(role="output")["run_id"])
    store.load(good)  # untouched


# -- import validation -----------------------------------------------------------------------
@pytest.fixture
def exported(store, tmp_path) -> tuple[TraceStore, Path, dict[str, bytes]]:
    rid = store.save(synthetic_trace(3, 16))
    zpath = store.export(rid, tmp_path / "run.zip")
    with zipfile.ZipFile(zpath) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    return store, zpath, members


def _zip(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members:
            zf.writestr(zipfile.ZipInfo(name), data)
    return path


def _import_refused(store: TraceStore, path: Path, match: str, tmp_path: Path) -> None:
    before = snapshot(tmp_path)
    target = TraceStore(tmp_path / "target", durable=False)
    before_target = snapshot(target.root)
    with pytest.raises(CorruptRunError, match=match):
        target.import_(path)
    with pytest.raises(CorruptRunError, match=match):
        store.import_(path)
    assert snapshot(target.root) == before_target
    after = {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("target")}
    assert after == {k: v for k, v in before.items() if not k.startswith("target")}
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name.startswith(".tmp")]
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/hooklab-evil.txt").exists()


@pytest.mark.parametrize("evil", ["../evil.txt", "../../evil.txt", "/tmp/hooklab-evil.txt",
                                  "sub/../../evil.txt", "..\\evil.txt", "C:/evil.txt"])
def test_zip_slip_members_are_refused(exported, tmp_path, evil):
    store, _, members = exported
    z = _zip(tmp_path / "slip.zip", list(members.items()) + [(evil, b"pwned")])
    _import_refused(store, z, "zip slip", tmp_path)


def test_zip_slip_replacing_a_member_is_refused(exported, tmp_path):
    store, _, members = exported
    items = [(("../" + n) if n == "events.parquet" else n, d) for n, d in members.items()]
    _import_refused(store, _zip(tmp_path / "slip2.zip", items), "zip slip", tmp_path)


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize("case", ["extra", "missing", "duplicate", "folder"])
def test_wrong_member_set_is_refused(exported, tmp_path, case):
    store, _, members = exported
    items = list(members.items())
    if case == "extra":
        items.append(("README.txt", b"hi"))
    elif case == "missing":
        items = [i for i in items if i[0] != "tensors.safetensors"]
    elif case == "duplicate":
        items.append(("manifest.json", members["manifest.json"]))
    else:
        items = [("run/" + n, d) for n, d in items]
    _import_refused(store, _zip(tmp_path / f"{case}.zip", items), "holds exactly", tmp_path)


def _with_manifest(members: dict[str, bytes], change) -> list[tuple[str, bytes]]:
    m = json.loads(members["manifest.json"])
    change(m)
    return [(n, json.dumps(m).encode() if n == "manifest.json" else d) for n, d in members.items()]


@pytest.mark.parametrize("case,match", [
    ("hash", "does not match"), ("size", "manifest.json says otherwise"),
    ("version", "unknown format version"), ("format", "not a hooklab run"),
    ("run_id", "not a valid run id"), ("tags", "wrong type"), ("files", "lists files"),
])
def test_tampered_manifest_is_refused(exported, tmp_path, case, match):
    store, _, members = exported

    def change(m):
        if case == "hash":
            m["files"]["tensors.safetensors"]["sha256"] = "0" * 64
        elif case == "size":
            m["files"]["events.parquet"]["bytes"] -= 1
        elif case == "version":
            m["format_version"] = 2
        elif case == "format":
            m["format"] = "something"
        elif case == "run_id":
            m["run_id"] = "../../escape"
        elif case == "tags":
            m["tags"] = "not-a-list"
        else:
            m["files"]["evil.py"] = m["files"]["events.parquet"]

    _import_refused(store, _zip(tmp_path / "t.zip", _with_manifest(members, change)), match,
                    tmp_path)


def test_tampered_payload_is_refused(exported, tmp_path):
    store, _, members = exported
    data = bytearray(members["tensors.safetensors"])
    data[-4:] = b"\x00\x00\xc0\x7f"  # a NaN where a number was: same size, different hash
    items = [(n, bytes(data) if n == "tensors.safetensors" else d) for n, d in members.items()]
    _import_refused(store, _zip(tmp_path / "p.zip", items), "does not match", tmp_path)


def test_not_a_zip_empty_and_missing_files(store, tmp_path):
    (tmp_path / "text.zip").write_text("hello, I am not a zip")
    (tmp_path / "empty.zip").write_bytes(b"")
    for name in ("text.zip", "empty.zip"):
        with pytest.raises(CorruptRunError, match="not a valid zip"):
            store.import_(tmp_path / name)
    with pytest.raises(StoreError, match="no such file"):
        store.import_(tmp_path / "absent.zip")
    assert store.list().empty


def test_import_size_limit(exported, tmp_path):
    store, zpath, _ = exported
    small = TraceStore(tmp_path / "small", durable=False, max_import_bytes=100)
    with pytest.raises(CorruptRunError, match="exceeds the import limit"):
        small.import_(zpath)
    assert small.list().empty


def test_truncated_zip_is_refused(exported, tmp_path):
    store, zpath, _ = exported
    cut = tmp_path / "cut.zip"
    cut.write_bytes(zpath.read_bytes()[: zpath.stat().st_size // 2])
    with pytest.raises(CorruptRunError):
        store.import_(cut)


def test_every_store_error_is_a_hooklab_error():
    assert issubclass(StoreError, HooklabError) and issubclass(CorruptRunError, StoreError)


def test_non_trace_and_bad_fields_refused(store):
    with pytest.raises(StoreError, match="expects a hooklab Trace"):
        store.save({"events": []})
    with pytest.raises(StoreError, match="strings"):
        store.save(synthetic_trace(1, 4), tags=[1, 2])
    assert store.list().empty
