"""Shared dashboard state: cached models (with a Lock), the store, the author, error boundary,
the operator's model modules (``$HOOKLAB_MODELS``).

Pages never register hooks or compute statistics themselves; they call hooklab. Every hooklab
call that can fail runs inside :func:`guard` (the page stops) or :func:`attempt` (the page goes
on); both turn the error into one ``st.error`` with the same text.
"""

from __future__ import annotations

import getpass
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import streamlit as st

from dashboard import auth
from dashboard.components.text import plain
from dashboard.i18n import t
from hooklab.core.errors import HooklabError
from hooklab.models import registry

log = logging.getLogger(__name__)
T = TypeVar("T")


@st.cache_resource(show_spinner=False)
def model_lock(name: str) -> threading.Lock:
    """One lock per cached model: a run holds it while it hooks and runs the shared model."""
    return threading.Lock()


@st.cache_resource(show_spinner=False)
def _store_at(root: str, admins: tuple[str, ...], enforce: bool):
    from hooklab.store.access import LabPolicy
    from hooklab.store.runs import TraceStore

    return TraceStore(root or None, policy=LabPolicy(admins=admins, enforce=enforce))


def store():
    """The trace store at $HOOKLAB_STORE (default ./hooklab-runs), with the lab policy when
    sign-in is configured (:func:`dashboard.auth.policy`); changes pass ``by=auth.identity()``."""
    p = auth.policy()
    return _store_at(os.environ.get("HOOKLAB_STORE") or "", p.admins, p.enforce)


store.clear = _store_at.clear  # type: ignore[attr-defined]  # tests reset the cached store


def model_module_errors() -> list[str]:
    """Import the model modules named in ``$HOOKLAB_MODELS`` (once per process and value; the
    server's operator chose them: trusted code) and load installed packages' ``hooklab.models``
    entry points (once); returns one message per module that failed. Uploaded files are never
    imported: they are data (weights, images, runs)."""
    registry.load_env()
    registry.registered()
    return [str(e) for e in registry.load_errors()]


def show_model_module_errors() -> None:
    """One ``st.error`` per model module that failed to load; the built-in models still work."""
    for msg in model_module_errors():
        st.error(t(f"{msg}. Its models are missing; the built-in models still work.",
                   f"{msg}。该模块的模型不可用；内置模型仍可使用。"))


def default_author() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user database in some containers
        return "anonymous"


def author() -> str:
    """The author of a saved run: the signed-in identity's label, else the sidebar's box."""
    who = auth.identity()
    if who is not None:
        return who.label
    return st.session_state.get("hooklab_author") or default_author()


def _message(what: str, exc: BaseException) -> str:
    """The one st.error text of a failed action: ``"<what>: <first line of the error>"``, as
    text (an error quotes a run's fields or a run id from the URL: no Markdown of theirs)."""
    msg = str(exc) if isinstance(exc, HooklabError) else (
        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return f"{plain(what)}: {plain(msg)}" if what else plain(msg)


def attempt(what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """Call ``fn``; on a user-facing error show one ``st.error`` and return None.

    Unlike :func:`guard` the page goes on (the run list stays usable when one run fails).
    """
    try:
        return fn(*args, **kwargs)
    except HooklabError as exc:
        st.error(_message(what, exc))
    except (ValueError, KeyError, TypeError, OSError, RuntimeError) as exc:
        log.exception("dashboard action failed: %s", what)
        st.error(_message(what, exc))
    return None


class _Stop(Exception):
    """Raised inside guard() after the error has been shown."""


@contextmanager
def guard(what: str = "") -> Iterator[None]:
    """Show any hooklab (or input) error as one ``st.error`` and stop the page cleanly.

    Unexpected exceptions are logged with their traceback (server side) and shown as one short
    message, never as a traceback in the page.
    """
    try:
        yield
    except HooklabError as exc:
        st.error(_message(what, exc))
        st.stop()
    except (ValueError, KeyError, TypeError, OSError, RuntimeError) as exc:
        log.exception("dashboard action failed: %s", what)
        st.error(_message(what, exc))
        st.stop()
