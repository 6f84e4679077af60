"""The framework-free `forksafe` package under a real gunicorn, with Pyramid,
zope.interface and pyramid_forksafe hidden: a plain WSGI application (no
framework at all) gets every event through its `[forksafe]` handlers and a
plain callable in `_forksafe.listeners`, as a Flask or Django application
would; and no fork hazard is said about it (the arbiter's own threads and
sockets are none).

The hiding is a `sitecustomize` first on PYTHONPATH that puts a finder at
the front of sys.meta_path (and forgets the `zope` namespace module that a
.pth file imported before it): `import pyramid` (or zope, or
pyramid_forksafe, which is beside forksafe in python/) raises
ModuleNotFoundError in gunicorn and its workers, as on a machine where they
are not installed.  PasteDeploy
stays: gunicorn's `--paste` is how the settings are read, and it is no web
framework.
"""
import json
import os
import subprocess
import sys
import unittest

from harness import BUILD, ROOT, free_port  # noqa: F401
from test_gunicorn import COMMON, EVENT_LOG, Gunicorn, setUpModule  # noqa: F401

HIDDEN = ("pyramid", "zope", "pyramid_forksafe")

SITECUSTOMIZE = '''
"""test_gunicorn_plain: Pyramid, zope.interface and pyramid_forksafe are not
installed here."""
import sys

HIDDEN = {hidden!r}


class Hide(object):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError("No module named %r (hidden by the test)" % name,
                                      name=name)
        return None


sys.meta_path.insert(0, Hide())
# A namespace package's .pth (zope's) may have imported it already.
for _name in list(sys.modules):
    if _name.split(".")[0] in HIDDEN:
        del sys.modules[_name]
'''.format(hidden=HIDDEN)

PLAINAPP = '''
"""A WSGI application and nothing else; a plain callable listens to forksafe."""
import json
import os
import sys

import fsplain


def main(global_config, **settings):
    import _forksafe   # provided by forksafe.gunicorn, as by the uWSGI plugin

    _forksafe.listeners.append(fsplain.listener)

    def app(environ, start_response):
        body = json.dumps({"pid": os.getpid(), "hidden": fsplain.hidden()}).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    return app
'''

FSPLAIN = '''
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
HIDDEN = {hidden!r}


def hidden():
    """True when nothing of Pyramid's is loaded in this process."""
    return not [name for name in sys.modules if name.split(".")[0] in HIDDEN]


def _write(name, payload):
    line = json.dumps({{"event": payload["event"], "process": payload["process"],
                       "settings": payload["settings"], "hidden": hidden()}})
    fd = os.open(os.path.join(HERE, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (line + "\\n").encode())
    finally:
        os.close(fd)


def record(payload):
    """python:fsplain:record, from the ini's [forksafe]."""
    _write("handler.jsonl", payload)


def listener(payload):
    """A plain callable in _forksafe.listeners."""
    _write("listener.jsonl", payload)
'''.format(hidden=HIDDEN)

INI = '''
[app:main]
use = call:plainapp:main
forksafe.event_log = %(here)s/native.jsonl
greeting = hello

[forksafe]
* =
    dl:{event_log}:record
    python:fsplain:record
'''

CONF = '''
from forksafe.gunicorn import *  # noqa: F401,F403
'''

EVERY_EVENT = ("master-start", "pre-fork", "post-fork-parent", "post-fork", "worker-ready",
               "worker-exit", "master-exit")


class PlainGunicorn(Gunicorn):
    def __init__(self, testcase, **kwargs):
        self.hide_dir = None
        super().__init__(testcase, CONF, ini=INI, extra_files={
            "plainapp.py": PLAINAPP, "fsplain.py": FSPLAIN}, **kwargs)
        self.hide_dir = os.path.join(self.dir, "hide")
        os.mkdir(self.hide_dir)
        with open(os.path.join(self.hide_dir, "sitecustomize.py"), "w") as f:
            f.write(SITECUSTOMIZE)

    def env(self):
        env = super().env()
        env["PYTHONPATH"] = os.pathsep.join([self.hide_dir, env["PYTHONPATH"]])
        return env


class PlainWsgiTest(unittest.TestCase):
    def test_pyramid_is_hidden(self):
        """The environment the servers run in cannot import Pyramid (the
        blocker works), and imports forksafe from this checkout."""
        g = PlainGunicorn(self)
        for module in HIDDEN + ("zope.interface", "pyramid_forksafe.containers.gunicorn"):
            result = subprocess.run([sys.executable, "-c", "import " + module], env=g.env(),
                                    cwd=g.dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    universal_newlines=True)
            self.assertNotEqual(result.returncode, 0, module)
            self.assertIn("hidden by the test", result.stdout, module)
        result = subprocess.run(
            [sys.executable, "-c", "import forksafe.gunicorn, forksafe.celery; "
             "print(forksafe.__file__)"],
            env=g.env(), cwd=g.dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            universal_newlines=True, check=True)
        self.assertEqual(result.stdout.strip(),
                         os.path.join(ROOT, "python", "forksafe", "__init__.py"))

    def check_run(self, g, preloaded):
        answer = g.get("/")
        self.assertTrue(answer["hidden"], answer)
        self.assertEqual(g.stop(), 0, g.log_text()[-4000:])
        log = g.log_text()
        self.assertNotIn("Traceback", log)
        self.assertNotIn("internal error", log)
        native = [e["event"] for e in g.events()]
        handler = g.events("handler.jsonl")
        for name in EVERY_EVENT:
            self.assertIn(name, native, log[-4000:])
            self.assertIn(name, [e["event"] for e in handler])
        self.assertEqual(len(g.events(name="worker-ready")), 2)
        for e in handler:
            self.assertTrue(e["hidden"], e)
            self.assertEqual(e["settings"]["greeting"], "hello")
        listened = g.events("listener.jsonl")
        self.assertTrue(all(e["hidden"] for e in listened))
        heard = {(e["process"]["kind"], e["event"]) for e in listened}
        for worker_event in ("worker-ready", "worker-exit"):
            self.assertIn(("worker", worker_event), heard)
        if preloaded:
            # loaded in the arbiter: the listener is there from master-start on
            for arbiter_event in ("master-start", "pre-fork", "post-fork-parent", "master-exit"):
                self.assertIn(("master", arbiter_event), heard)
            self.assertIn(("worker", "post-fork"), heard)

    def test_every_event_preloaded(self):
        g = PlainGunicorn(self).start("--preload")
        self.check_run(g, preloaded=True)

    def test_every_event_loaded_in_the_workers(self):
        g = PlainGunicorn(self).start()
        self.check_run(g, preloaded=False)

    def test_a_plain_app_has_no_fork_hazard(self):
        # The arbiter's own threads and sockets (listener, wake-up pipe,
        # statsd over UDP) are no hazard, at the first forks and at respawns.
        g = PlainGunicorn(self).start("--preload", "--max-requests", "1",
                                      "--statsd-host", "127.0.0.1:%d" % free_port())
        for _ in range(4):
            g.get("/")
        g.wait_events("pre-fork", 4)
        g.wait_events("worker-ready", 4)
        self.assertEqual(g.stop(), 0, g.log_text()[-4000:])
        log = g.log_text()
        self.assertNotIn("will inherit", log)
        self.assertNotIn("is forked while", log)
        pre_forks = g.events(name="pre-fork")
        self.assertGreater(max(e["child"]["respawn"] for e in pre_forks), 0)
        self.assertEqual([e["hazards"] for e in pre_forks], [[]] * len(pre_forks))


if __name__ == "__main__":
    unittest.main()
