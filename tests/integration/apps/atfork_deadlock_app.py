"""The deadlock uWSGI users hit (tests/integration/test_python_atfork.py):
a thread started at import keeps a lock held nearly all the time in the
master, and each worker takes that lock on its first request.  A child
forked while the thread holds it inherits it held, by a thread the child
does not have, and waits for ever, unless an at-fork handler made it sane.

FORKSAFE_DEADLOCK = "logging": the lock is a logging handler's (the thread
logs through a slow handler; the worker logs through the same one).
CPython's logging re-creates every handler's lock in a child, in its
`after_in_child` handler.

FORKSAFE_DEADLOCK = "lock": the lock is the app's own threading.Lock, which
the app keeps sane across a fork with os.register_at_fork: taken `before`,
released `after_in_parent` and `after_in_child`.
"""
import logging
import os
import threading
import time

KIND = os.environ.get("FORKSAFE_DEADLOCK", "logging")
HELD = 0.002  # seconds the thread holds the lock each time
GAP = 0.0001  # and lets go of it between two holds


class SlowHandler(logging.Handler):
    """A handler whose emit takes HELD seconds: Handler.handle() holds the
    handler's lock around it."""

    def emit(self, record):
        time.sleep(HELD)


log = logging.getLogger("forksafe.deadlock")
log.propagate = False
log.setLevel(logging.INFO)
log.addHandler(SlowHandler())

app_lock = threading.Lock()
if KIND == "lock":
    os.register_at_fork(before=app_lock.acquire, after_in_parent=app_lock.release,
                        after_in_child=app_lock.release)


def _hold_forever():
    while True:
        if KIND == "logging":
            log.info("tick")
        else:
            with app_lock:
                time.sleep(HELD)
        time.sleep(GAP)


threading.Thread(target=_hold_forever, name="lock-holder", daemon=True).start()


def application(environ, start_response):
    if KIND == "logging":
        log.info("first request in %d", os.getpid())
    else:
        with app_lock:
            pass
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"%d\n" % os.getpid()]
