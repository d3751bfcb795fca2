"""The CLI's run-changing commands go through the library's policy (``--as``, ``--admins``,
``$HOOKLAB_ADMINS``); ``runs history`` and ``runs audit`` read the audit log."""

from __future__ import annotations

import json

import pytest

from hooklab.cli.main import main
from hooklab.store.runs import TraceStore
from hooklab.testing.store_stress import synthetic_trace


@pytest.fixture
def lab(tmp_path, monkeypatch):
    monkeypatch.delenv("HOOKLAB_ADMINS", raising=False)
    store = TraceStore(tmp_path / "runs", durable=False)
    rid = store.save(synthetic_trace(1, 4), author="ana", notes="orig")
    return store, rid


def test_as_another_member_is_refused_with_one_line(lab, capsys):
    store, rid = lab
    code = main(["--store", str(store.root), "runs", "update", rid, "--notes", "x", "--as", "ben"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "ben may not change" in err and "ana" in err
    assert store.manifest(rid)["notes"] == "orig"
    assert main(["--store", str(store.root), "runs", "delete", rid, "--as", "ben"]) == 2
    assert store.exists(rid)


def test_author_and_env_admin_may(lab, monkeypatch, capsys):
    store, rid = lab
    assert main(["--store", str(store.root), "runs", "update", rid, "--notes", "a",
                 "--as", "ana"]) == 0
    monkeypatch.setenv("HOOKLAB_ADMINS", "boss@lab.org")
    assert main(["--store", str(store.root), "runs", "delete", rid, "--as", "boss@lab.org"]) == 0
    assert not store.exists(rid)
    assert main(["--store", str(store.root), "runs", "restore", rid, "--as", "ben"]) == 2
    assert main(["--store", str(store.root), "runs", "restore", rid, "--admins", "ben",
                 "--as", "ben"]) == 0
    capsys.readouterr()
    assert main(["--store", str(store.root), "runs", "history", rid]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()]
    assert [r[4] for r in rows] == ["save", "update", "trash", "restore"]
    assert "'orig' -> 'a'" in out and "boss@lab.org" in out


def test_without_policy_the_local_user_may_do_everything(lab):
    store, rid = lab  # saved by "ana"; the OS user is someone else
    assert main(["--store", str(store.root), "runs", "update", rid, "--notes", "local"]) == 0
    assert store.manifest(rid)["notes"] == "local"


def test_runs_audit_reports_a_tampered_line(lab, capsys):
    store, rid = lab
    main(["--store", str(store.root), "runs", "update", rid, "--tags", "t"])
    assert main(["--store", str(store.root), "runs", "audit"]) == 0
    assert "2 line(s), head" in capsys.readouterr().out
    lines = store.audit.path.read_text().splitlines()
    e = json.loads(lines[0])
    e["who"]["name"] = "nobody"
    store.audit.path.write_text("\n".join([json.dumps(e), *lines[1:]]) + "\n")
    assert main(["--store", str(store.root), "runs", "audit"]) == 2
    out = capsys.readouterr().out
    assert "problem: line 1" in out and "edited" in out
