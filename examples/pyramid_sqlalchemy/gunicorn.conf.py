# forksafe_sqla under gunicorn: the same production.ini, the same [forksafe]
# handlers, the same payload -- gunicorn instead of uWSGI.  From this
# directory, after `make` at the repository root (build/libforksafe.so):
#
#   gunicorn --paste production.ini -c gunicorn.conf.py
#
# gunicorn reads [app:main] through PasteDeploy; forksafe reads the same
# [app:main] as the settings and the [forksafe] section as the
# subscriptions, so `post-fork = python:forksafe_sqla.forksafe:dispose_engine`
# gives every gunicorn worker its own connection pool exactly as it does
# for uWSGI.  (The [uwsgi] section is uWSGI's; gunicorn ignores it.)
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

try:
    from pyramid_forksafe.containers import gunicorn as forksafe
except ImportError:  # not installed: this checkout's python/ package
    sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))
    from pyramid_forksafe.containers import gunicorn as forksafe

# Every forksafe hook (on_starting, when_ready, pre_fork, post_fork,
# post_worker_init, worker_exit, child_exit, on_reload, on_exit).  Hooks of
# your own go in as arguments and run after forksafe's part, e.g.
#   globals().update(forksafe.hooks(post_fork=my_post_fork))
# (or simply: from pyramid_forksafe.containers.gunicorn import *)
globals().update(forksafe.hooks())

# Subscriptions beyond production.ini's [forksafe] section, in the
# forksafe-subscribe syntax (the section runs first), and the options:
forksafe_subscribe = [
    # "worker-ready kind=worker id=1 exec:logger -t forksafe_sqla first worker up",
    "worker-ready once hook:print:[forksafe_sqla] serving on http://127.0.0.1:8080/"
    " (Ctrl-C stops it)",
]
forksafe_on_error = "log"  # log | exit | fatal
forksafe_timeout = 30  # seconds, exec handlers
forksafe_verbose = False
# forksafe_settings = None  # PATH[#NAME]; default: the --paste file

# As uWSGI does by default: load the app (and make its engine) in the
# arbiter, then fork -- the case where the post-fork handler matters.
preload_app = True
workers = 4
bind = "127.0.0.1:8080"
pythonpath = HERE  # forksafe_sqla
