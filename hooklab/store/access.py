"""Who may do what to a stored run: identities, the lab policy and its one check.

Every member reads and exports every run. Only the run's *owner* (its author; for an imported
run, the member who imported it) or a lab admin edits its notes and tags, trashes, restores or
purges it. Without a policy (:meth:`LabPolicy.open`, the local default) everyone may do
everything, exactly as before sign-in existed.

Where the policy comes from:

* the dashboard: ``[hooklab] admins = ["ana@lab.org", ...]`` in ``.streamlit/secrets.toml``;
  enforced when ``[auth]`` is configured there (``dashboard/auth.py``);
* the CLI: ``--admins`` or ``$HOOKLAB_ADMINS`` (comma-separated e-mails or subjects); enforced
  when one of them or ``--as`` is given (:func:`policy_from_env`).

Example:
    >>> policy = LabPolicy(admins=("boss@lab.org",), enforce=True)
    >>> store = TraceStore("runs", policy=policy)
    >>> store.update(run_id, notes="mine", by=Identity.from_claims({"email": "ana@lab.org"}))
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from hooklab.core.errors import HooklabError

__all__ = ["ACTIONS", "ADMINS_ENV", "Decision", "Identity", "LabPolicy", "PermissionDenied",
           "owner_of", "policy_from_env", "saved_author"]

#: Environment variable with the CLI's admins (comma-separated e-mails or subjects).
ADMINS_ENV = "HOOKLAB_ADMINS"
#: The run-changing actions the policy guards (reading and exporting are never refused).
ACTIONS = {"update": "change the notes and tags of", "trash": "move to the trash",
           "restore": "restore", "purge": "purge"}


class PermissionDenied(HooklabError, PermissionError):
    """The acting identity may not change this run; nothing was changed."""


@dataclass(frozen=True)
class Identity:
    """Who acts: a signed-in member (OpenID Connect claims) or the local OS user.

    Attributes:
        name: display name (``name`` claim, or the login name).
        email: e-mail address (``email`` claim; may be empty).
        subject: the provider's stable user id (``sub`` claim; the login name locally).
        provider: the issuer / provider name; ``"local"`` for the OS user.
    """

    name: str = ""
    email: str = ""
    subject: str = ""
    provider: str = "local"

    @classmethod
    def local(cls, name: str | None = None) -> Identity:
        """The OS user (or ``name``, e.g. the CLI's ``--as``; an e-mail there sets ``email``)."""
        if name is None:
            try:
                name = getpass.getuser()
            except Exception:  # noqa: BLE001 - no user database in some containers
                name = "anonymous"
        name = name.strip()
        return cls(name=name, email=name if "@" in name else "", subject=name, provider="local")

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any], provider: str = "") -> Identity:
        """An identity from OpenID Connect claims (``st.user``): name, email, sub, iss."""
        def s(key: str) -> str:
            v = claims.get(key)
            return v.strip() if isinstance(v, str) else ""
        email = s("email")
        sub = s("sub") or email
        return cls(name=s("name") or s("preferred_username") or email or sub, email=email,
                   subject=sub, provider=provider or s("iss") or s("provider") or "oidc")

    @classmethod
    def from_dict(cls, d: Any) -> Identity | None:
        """The identity a manifest or audit line stored (``None`` if it is not one)."""
        if not isinstance(d, Mapping):
            return None
        vals = {k: d.get(k) for k in ("name", "email", "subject", "provider")}
        if not all(isinstance(v, str) for v in vals.values()):
            return None
        return cls(**vals)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @property
    def label(self) -> str:
        """``"Ana <ana@lab.org>"``, or the name alone: the author text of a run."""
        if self.email and self.name and self.name != self.email:
            return f"{self.name} <{self.email}>"
        return self.name or self.email or self.subject

    def same_person(self, other: Identity | None) -> bool:
        """Same provider and subject, or (both non-empty) the same e-mail, case-insensitive."""
        if other is None:
            return False
        if self.subject and self.provider == other.provider and self.subject == other.subject:
            return True
        return bool(self.email) and self.email.lower() == other.email.lower()


@dataclass(frozen=True)
class Decision:
    """The answer of :meth:`LabPolicy.decide`: ``allowed`` and, when refused, ``reason``."""

    allowed: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.allowed


def saved_author(author: str | None, by: Identity | None) -> str:
    """The ``author`` a new run records: the signed-in ``by``'s label, else ``author``, else the
    login name (``""`` where there is none, as in some containers)."""
    if by is not None:
        return by.label
    if author is not None:
        return author
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user database in some containers
        return ""


def owner_of(manifest: Mapping[str, Any]) -> Identity | None:
    """Who owns a run for the policy: the importer of an imported run (an imported author
    cannot be verified: a zip can claim anyone), else its author's identity. A run saved
    before sign-in existed has only an author name: a local identity of that name."""
    imported = Identity.from_dict(manifest.get("imported_by"))
    if imported is not None:
        return imported
    ident = Identity.from_dict(manifest.get("author_identity"))
    if ident is not None:
        return ident
    author = manifest.get("author")
    return Identity.local(author) if isinstance(author, str) and author else None


@dataclass(frozen=True)
class LabPolicy:
    """The lab's rule for changing runs.

    Attributes:
        admins: identities that may change every run: e-mails (case-insensitive) or subjects.
        enforce: check at all; ``False`` (the local default) allows everything.
    """

    admins: tuple[str, ...] = ()
    enforce: bool = False

    @classmethod
    def open(cls) -> LabPolicy:
        """No checks: the local, single-user default."""
        return cls()

    @classmethod
    def lab(cls, admins: Iterable[str] | str = ()) -> LabPolicy:
        """Checks on, with these admins (a list, or one comma-separated string)."""
        if isinstance(admins, str):
            admins = admins.split(",")
        if not all(isinstance(a, str) for a in admins):
            raise HooklabError("admins must be a list of e-mails or subjects (strings)")
        return cls(admins=tuple(a.strip() for a in admins if a.strip()), enforce=True)

    def is_admin(self, who: Identity) -> bool:
        for entry in self.admins:
            if "@" in entry and who.email and entry.lower() == who.email.lower():
                return True
            if who.subject and entry == who.subject:
                return True
        return False

    def decide(self, who: Identity, action: str, manifest: Mapping[str, Any]) -> Decision:
        """May ``who`` do ``action`` (a key of :data:`ACTIONS`) to the run of ``manifest``?"""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; one of {sorted(ACTIONS)}")
        if not self.enforce or self.is_admin(who):
            return Decision(True)
        owner = owner_of(manifest)
        if owner is not None and who.same_person(owner):
            return Decision(True)
        rid = manifest.get("run_id", "?")
        whose = owner.label if owner is not None else "nobody recorded"
        role = "imported by" if manifest.get("imported_by") else "author"
        return Decision(False, f"{who.label or 'you'} may not {ACTIONS[action]} run {rid}: only "
                               f"its owner ({role}: {whose}) or a lab admin may")

    def check(self, who: Identity, action: str, manifest: Mapping[str, Any]) -> None:
        """Raise :class:`PermissionDenied` when :meth:`decide` refuses."""
        d = self.decide(who, action, manifest)
        if not d.allowed:
            raise PermissionDenied(d.reason)


def policy_from_env(admins: str | None = None, acting_as: str | None = None) -> LabPolicy:
    """The CLI's policy: ``admins`` (``--admins``) else ``$HOOKLAB_ADMINS``; enforced when
    either is set or ``acting_as`` (``--as``) is given, else open (the local default)."""
    given = admins if admins is not None else os.environ.get(ADMINS_ENV)
    if given is None and not acting_as:
        return LabPolicy.open()
    return LabPolicy.lab(given or "")
