"""The post-fork handler: gives each forked process its own connection pool.

One function, two ways to subscribe it:

1. forksafe's `python:` handler kind, no Pyramid needed (production.ini's
   `[forksafe]` section, or `forksafe-subscribe` in `[uwsgi]`):

       [forksafe]
       post-fork = python:forksafe_sqla.forksafe:dispose_engine

   forksafe calls it in the new worker with one argument, the event payload
   as a dict; payload["settings"] is the app's settings (Pyramid's
   registry.settings), payload["process"] = {kind, id, pid, ppid}.

2. a Pyramid subscriber for pyramid_forksafe's ApplicationPostFork
   (`config.include("forksafe_sqla.forksafe")`, which app.py does when the
   setting `forksafe_sqla.pyramid_forksafe = true`); it gets the event and
   reads event.payload / event.registry.settings.

Either way it disposes the engines the app made before the fork -- found in
forksafe_sqla.db's registry, which is keyed by the `sqlalchemy.url`
setting -- with `engine.dispose(close=False)`, as SQLAlchemy documents for
forked processes (the parameter exists since SQLAlchemy 1.4.33).  It builds
nothing: no engine is created here, and nothing happens in a process whose
engines are its own.  Subscribing it both ways is harmless (idempotent).
"""

import os
import sys
from collections.abc import Mapping

from . import db

SETTING = db.PREFIX + "url"


def _unpack(event_or_payload):
    """(payload dict, settings) from a forksafe payload or a Pyramid event."""
    if isinstance(event_or_payload, Mapping):
        payload = event_or_payload
        settings = payload.get("settings") or {}
    else:
        payload = getattr(event_or_payload, "payload", None) or {}
        settings = payload.get("settings")
        if settings is None:
            registry = getattr(event_or_payload, "registry", None)
            settings = getattr(registry, "settings", None) or {}
    return payload, settings


def dispose_engine(event_or_payload):
    """post-fork: dispose (close=False) the engines inherited from the parent."""
    payload, settings = _unpack(event_or_payload)
    process = payload.get("process") or {}
    url = settings.get(SETTING)
    reason = payload.get("event", "post-fork")
    # The app's engine (its sqlalchemy.url) first; then anything else made
    # before the fork, which is just as unsafe in this process.
    done = db.dispose_inherited(url, reason) if db.has_engine(url) else []
    done += db.dispose_inherited(None, reason)
    if process:
        where = "%s %s (pid %s)" % (process.get("kind"), process.get("id"), process.get("pid"))
    else:
        where = "pid %d" % os.getpid()
    for safe, origin in done:
        sys.stderr.write("[forksafe_sqla] %s: disposed the pool of %s inherited from pid %s "
                         "(dispose(close=False))\n" % (where, safe, origin))
    if url is not None and not db.has_engine(url):
        sys.stderr.write("[forksafe_sqla] %s: no engine for %s in this process yet "
                         "(nothing to dispose)\n" % (where, db.safe_url(url)))
    sys.stderr.flush()


def includeme(config):
    """Pyramid: subscribe dispose_engine to pyramid_forksafe's ApplicationPostFork.

    pyramid_forksafe is imported only here, so this module (and the python:
    handler above) works where it is not installed."""
    try:
        from pyramid_forksafe.events import ApplicationPostFork
    except ImportError as e:
        from pyramid.exceptions import ConfigurationError

        raise ConfigurationError(
            "forksafe_sqla.pyramid_forksafe = true needs the pyramid_forksafe package (%s); "
            "without it, subscribe the python: handler instead:\n"
            "  [forksafe]\n  post-fork = python:forksafe_sqla.forksafe:dispose_engine" % e
        ) from None
    config.include("pyramid_forksafe")
    config.add_subscriber(dispose_engine, ApplicationPostFork)
