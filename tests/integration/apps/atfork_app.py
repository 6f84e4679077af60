"""A WSGI app that registers os.register_at_fork handlers at import, two of
each kind, and notes every call as "PID WHICH" in the file named by
FORKSAFE_ATFORK_LOG (tests/integration/test_python_atfork.py, and the
gunicorn and Celery rows of the same proof).  One write per line, appended:
lines from many processes never interleave.

CPython runs the `before` handlers in reverse registration order (before2,
then before1) and the `after_*` ones in registration order (1, then 2).
"""
import os

LOG = os.environ.get("FORKSAFE_ATFORK_LOG", "")


def note(which):
    if not LOG:
        return
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, ("%d %s\n" % (os.getpid(), which)).encode())
    finally:
        os.close(fd)


def _register(n):
    os.register_at_fork(before=lambda: note("before%d" % n),
                        after_in_parent=lambda: note("parent%d" % n),
                        after_in_child=lambda: note("child%d" % n))


_register(1)
_register(2)


def read_notes(path):
    """[(pid, which)] in the order they were written."""
    try:
        with open(path) as f:
            return [(int(pid), which) for pid, which in
                    (line.split() for line in f if line.endswith("\n"))]
    except FileNotFoundError:
        return []


def on_post_fork(event):
    """A forksafe python: post-fork handler: it must find after_in_child
    done in its process already."""
    note("post-fork")


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"%d\n" % os.getpid()]
