"""The lab policy in the library, without Streamlit: who may change which run.

Matrix: author / other member / admin x update, trash, restore, purge; reading and exporting are
never refused; a refusal raises one PermissionDenied and leaves every byte on disk as it was;
imported runs keep their author and record the importer (a forged author gives no rights);
the open (local) default allows everything.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from hooklab.core.errors import HooklabError
from hooklab.store.access import Identity, LabPolicy, PermissionDenied, owner_of, policy_from_env
from hooklab.store.runs import TraceStore
from hooklab.testing.store_stress import synthetic_trace

ANA = Identity(name="Ana", email="ana@lab.org", subject="sub-ana", provider="http://idp")
BEN = Identity(name="Ben", email="ben@lab.org", subject="sub-ben", provider="http://idp")
BOSS = Identity(name="Boss", email="Boss@Lab.org", subject="sub-boss", provider="http://idp")
POLICY = LabPolicy.lab(["boss@lab.org"])


def snapshot(root: Path) -> dict[str, str]:
    """Every file under the store (audit log included) -> sha256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "lock"}


@pytest.fixture
def lab(tmp_path):
    store = TraceStore(tmp_path / "runs", durable=False, policy=POLICY)
    rid = store.save(synthetic_trace(2, 16), notes="first", tags=["a"], by=ANA)
    return store, rid


def test_save_records_the_signed_in_identity_as_author(lab):
    store, rid = lab
    m = store.manifest(rid)
    assert m["author"] == "Ana <ana@lab.org>"
    assert Identity.from_dict(m["author_identity"]) == ANA
    assert owner_of(m) == ANA


@pytest.mark.parametrize("action", ["update", "trash"])
def test_other_member_is_refused_and_nothing_changes_on_disk(lab, action):
    store, rid = lab
    before = snapshot(store.root)
    with pytest.raises(PermissionDenied) as err:
        if action == "update":
            store.update(rid, notes="mine now", by=BEN)
        else:
            store.delete(rid, by=BEN)
    msg = str(err.value)
    assert "Ben" in msg and rid in msg and "Ana <ana@lab.org>" in msg and "admin" in msg
    assert isinstance(err.value, HooklabError) and isinstance(err.value, PermissionError)
    assert snapshot(store.root) == before
    assert store.manifest(rid)["notes"] == "first"


def test_other_member_reads_and_exports(lab, tmp_path):
    store, rid = lab
    assert store.decide(rid, "update", BEN).allowed is False
    assert store.load(rid).events.shape[0] == 2  # reading needs no permission
    zpath = store.export(rid, tmp_path / "out.zip")
    assert zipfile.is_zipfile(zpath)


@pytest.mark.parametrize("who", [ANA, BOSS], ids=["author", "admin"])
def test_author_and_admin_may_do_everything(lab, who):
    store, rid = lab
    assert store.decide(rid, "update", who)
    m = store.update(rid, notes="edited", tags="x, y", by=who)
    assert m["notes"] == "edited" and m["tags"] == ["x", "y"]
    store.delete(rid, by=who)
    assert not store.exists(rid)
    store.restore(rid, by=who)
    assert store.exists(rid)
    store.delete(rid, by=who)
    assert store.purge(rid, by=who) == [rid]
    actions = [e["action"] for e in store.history(rid)]
    assert actions == ["save", "update", "trash", "restore", "trash", "purge"]
    assert {e["who"]["subject"] for e in store.history(rid)[1:]} == {who.subject}


def test_restore_and_purge_of_someone_elses_run_are_refused(lab):
    store, rid = lab
    store.delete(rid, by=ANA)
    before = snapshot(store.root)
    with pytest.raises(PermissionDenied):
        store.restore(rid, by=BEN)
    with pytest.raises(PermissionDenied):
        store.purge(by=BEN)  # the whole trash: refused before anything is deleted
    assert snapshot(store.root) == before
    assert list(store.trash_list()["run_id"]) == [rid]


def test_admin_matches_email_case_insensitively_or_subject():
    assert POLICY.is_admin(BOSS)
    assert LabPolicy.lab("sub-ben").is_admin(BEN)
    assert not POLICY.is_admin(ANA)
    impostor = Identity(name="Boss", email="", subject="Boss", provider="http://idp")
    assert not POLICY.is_admin(impostor)  # a display name is not an identity


def test_same_subject_on_another_provider_is_someone_else(lab):
    store, rid = lab
    other = Identity(name="Ana", email="", subject="sub-ana", provider="http://elsewhere")
    assert not store.decide(rid, "update", other).allowed


def _forged_zip(store: TraceStore, rid: str, tmp_path: Path) -> Path:
    """The run exported, with its manifest claiming Ben as author and importer."""
    src = store.export(rid, tmp_path / "orig.zip")
    out = tmp_path / "forged.zip"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "manifest.json":
                m = json.loads(data)
                m["author"] = "Ben <ben@lab.org>"
                m["author_identity"] = BEN.to_dict()
                m["imported_by"] = BEN.to_dict()
                data = json.dumps(m).encode()
            zout.writestr(info.filename, data)
    return out


def test_forged_author_in_an_imported_zip_is_recorded_as_imported_by_the_member(lab, tmp_path):
    store, rid = lab
    forged = _forged_zip(store, rid, tmp_path)
    other = TraceStore(tmp_path / "other", durable=False, policy=POLICY)
    new = other.import_(forged, by=ANA)
    m = other.manifest(new)
    assert m["author"] == "Ben <ben@lab.org>"  # the original (claimed) author is kept
    assert Identity.from_dict(m["imported_by"]) == ANA and m["imported_at"]
    assert owner_of(m) == ANA
    with pytest.raises(PermissionDenied, match="imported by: Ana"):
        other.update(new, notes="x", by=BEN)  # the claim gives Ben no rights
    other.update(new, notes="ok", by=ANA)
    (imp,) = [e for e in other.history(new) if e["action"] == "import"]
    assert imp["who"] == ANA.to_dict() and imp["after"]["author"] == "Ben <ben@lab.org>"


def test_open_policy_is_the_local_default(tmp_path):
    store = TraceStore(tmp_path / "runs", durable=False)
    rid = store.save(synthetic_trace(1, 4), author="somebody else")
    store.update(rid, notes="local user may", by=BEN)
    store.delete(rid)
    store.restore(rid)
    assert store.decide(rid, "trash", BEN).allowed
    assert [e["action"] for e in store.history(rid)] == ["save", "update", "trash", "restore"]


def test_runs_saved_before_sign_in_belong_to_the_local_user_of_that_name(tmp_path):
    store = TraceStore(tmp_path / "runs", durable=False)
    rid = store.save(synthetic_trace(1, 4), author="ana")
    lab_store = TraceStore(store.root, durable=False, policy=LabPolicy.lab())
    assert lab_store.decide(rid, "update", Identity.local("ana")).allowed
    assert not lab_store.decide(rid, "update", Identity.local("ben")).allowed
    assert not lab_store.decide(rid, "update", ANA).allowed  # a signed-in Ana: not the same


def test_policy_from_env(monkeypatch):
    monkeypatch.delenv("HOOKLAB_ADMINS", raising=False)
    assert not policy_from_env().enforce
    assert policy_from_env(acting_as="ana").enforce
    monkeypatch.setenv("HOOKLAB_ADMINS", "a@x.org, sub-b")
    p = policy_from_env()
    assert p.enforce and p.admins == ("a@x.org", "sub-b")
    assert policy_from_env(admins="c@x.org").admins == ("c@x.org",)


def test_bad_admins_and_unknown_action_are_clear_errors():
    with pytest.raises(HooklabError, match="admins"):
        LabPolicy.lab([1, 2])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="unknown action"):
        POLICY.decide(ANA, "rename", {})


def test_identity_from_claims():
    ident = Identity.from_claims({"email": "ana@lab.org", "sub": "s1", "name": "Ana",
                                  "iss": "http://idp"})
    assert ident == Identity("Ana", "ana@lab.org", "s1", "http://idp")
    assert Identity.from_claims({"sub": "s2"}, provider="p").label == "s2"
    assert Identity.from_dict({"name": 1}) is None
