"""A WSGI app that answers with its worker's pid and records when it loads."""
import json
import os
import signal
import time

_record = os.environ.get("FORKSAFE_TEST_RECORD")
if _record:
    with open(_record, "a") as f:
        f.write(json.dumps({"event": "app-loaded", "time": time.time(),
                            "process": {"kind": "app", "id": 0, "pid": os.getpid()}}) + "\n")


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/sleep":
        # ?PATH: a file created once the request is being served
        if environ.get("QUERY_STRING"):
            open(environ["QUERY_STRING"], "w").close()
        time.sleep(30)
    elif path == "/busy":
        # ?PATH: a file created once the request is being served; a
        # request that outlives a stop or reload order, and ends
        open(environ["QUERY_STRING"], "w").close()
        time.sleep(3)
    elif path == "/segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif path == "/spool":
        import uwsgi
        uwsgi.spool({b"task": b"compat"})
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]


def make_app(global_conf, **settings):
    """PasteDeploy entry point (use = call:simple_app:make_app)."""
    return application
