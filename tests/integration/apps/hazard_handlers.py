"""Handlers of the fork-hazard tests (tests/integration/test_hazards.py,
test_gunicorn_hazards.py, test_celery_hazards.py): the fix a hazard line
suggests first, as a pre-fork handler (the master closes every connection
the example's engines hold before it forks, so no child inherits one), and
masters that open a connection while their children run."""


def close_pools_before_fork(payload):
    from forksafe_sqla import db

    for engine in db.engines().values():
        engine.dispose()  # close=True: the master keeps no connection


_kept = []


def connect_later(payload):
    """A master that opens a connection after its children run (here on
    child-death): the connection is kept, as a pool would keep it."""
    import socket

    host, port = payload["settings"]["hazard.connect"].rsplit(":", 1)
    _kept.append(socket.create_connection((host, int(port))))


def connect_on_respawn(payload):
    """A pre-fork handler that connects the master to $HAZARD_LISTENER
    (HOST:PORT) before the first respawn and keeps the connection: a hazard
    that appears while children run (gunicorn and Celery, hazards = fail)."""
    import os
    import socket

    if (payload.get("child") or {}).get("respawn", 0) < 1 or _kept:
        return
    host, port = os.environ["HAZARD_LISTENER"].rsplit(":", 1)
    _kept.append(socket.create_connection((host, int(port)), timeout=10))
