"""The work the spawn benchmark's Python post-fork hooks do, the same for a
forksafe python: handler and a uwsgidecorators @postfork function: note the
pid in a module global (cheap, so the hook's own cost is what is measured)."""
import os

last_pid = None


def work():
    global last_pid
    last_pid = os.getpid()


def on_post_fork(payload):
    """forksafe python: handler (called with the event's payload)."""
    work()
