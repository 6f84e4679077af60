"""The fix a hazard line suggests first, as a pre-fork handler
(tests/integration/test_hazards.py): the master closes every connection the
example's engines hold before it forks, so no child inherits one."""


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
