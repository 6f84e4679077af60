"""simple_app with a uwsgidecorators @postfork hook that notes when each
worker started: the clock bench/fast_respawn.py reads a replacement's start
from, the same with and without forksafe."""
import os
import time

from uwsgidecorators import postfork

from simple_app import application  # noqa: F401 - the WSGI callable uWSGI serves

_NOTES = os.environ["FORKSAFE_BENCH_POSTFORK"]


@postfork
def note_start():
    with open(_NOTES, "a") as f:
        f.write("%d %.6f\n" % (os.getpid(), time.time()))
