"""pyramid_forksafe's gunicorn adapter under a real gunicorn (Debian's).

Every instance runs in a temp dir of its own: a Pyramid app (gapp.py), a
recorder module (fsrec.py), a paste ini and a gunicorn config.  Events are
recorded three ways, to three files:

  - the native event_log handler (`dl:`, from the ini's [forksafe]) -- the
    payload the C core builds;
  - a `python:` handler (fsrec.record), from the ini or the gunicorn config;
  - a Pyramid subscriber of IForksafeEvent (fsrec.subscriber) -- the payload
    the adapter builds in Python.

gunicorn is started with start_new_session=True and a pidfile, stopped by
SIGTERM to the arbiter's pid (graceful), and its process group is SIGKILLed
and reaped as a cleanup whatever happens.

The PostgreSQL class serves examples/pyramid_sqlalchemy/production.ini with
`gunicorn --paste production.ini -c gunicorn.conf.py` (the example's own
config: preload_app, 4 workers) against a throw-away cluster: with the
file's `post-fork = recipe:sqlalchemy` every worker drops the pool it
inherited and has its own backend; without that line, or without the
forksafe hooks, the hazard of test_postgres.py shows.  The same file under
Celery: test_recipe_servers.py.
"""

import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import unittest
import urllib.request

from harness import BUILD, ROOT, ServerProcess, free_port, read_jsonl, wait_for

GUNICORN = os.environ.get("GUNICORN", "/usr/bin/gunicorn")
PYTHON_PACKAGE = os.path.join(ROOT, "python")
EVENT_LOG = os.path.join(BUILD, "examples", "event_log.so")
LIBRARY = os.path.join(BUILD, "libforksafe.so")
EXAMPLE = os.path.join(ROOT, "examples", "pyramid_sqlalchemy")

ARBITER_EVENTS = ("master-start", "pre-fork", "post-fork-parent", "child-death", "master-exit")

GAPP = '''
import json
import os

from pyramid.config import Configurator
from pyramid.response import Response
from pyramid.settings import asbool

import fsrec
from pyramid_forksafe.interfaces import IForksafeEvent


def home(request):
    return Response(json={"pid": os.getpid()})


def sleep(request):
    import time

    time.sleep(float(request.params.get("s", "5")))
    return Response(json={"pid": os.getpid()})


def main(global_config, **settings):
    config = Configurator(settings=settings)
    if asbool(settings.get("test.include", "true")):
        config.include("pyramid_forksafe")
    config.add_subscriber(fsrec.subscriber, IForksafeEvent)
    config.add_route("home", "/")
    config.add_view(home, route_name="home")
    config.add_route("sleep", "/sleep")
    config.add_view(sleep, route_name="sleep")
    app = config.make_wsgi_app()
    fsrec.note("app-loaded", os.getpid())
    return app
'''

FSREC = '''
"""Recorders: python: handler, Pyramid subscriber, user gunicorn hooks."""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _write(name, obj):
    line = (json.dumps(obj, sort_keys=True) + "\\n").encode()
    fd = os.open(os.path.join(HERE, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def note(what, pid, **extra):
    extra.update(what=what, pid=pid)
    _write("notes.jsonl", extra)


def record(payload):
    """python: handler."""
    entry = dict(payload)
    entry["gapp_imported"] = "gapp" in sys.modules
    _write("python.jsonl", entry)


def record_config(payload):
    """python: handler subscribed in the gunicorn config."""
    _write("python_config.jsonl", dict(payload))


def subscriber(event):
    """Pyramid subscriber of IForksafeEvent."""
    entry = dict(event.payload)
    entry["replayed"] = event.replayed
    entry["class"] = type(event).__name__
    _write("pyramid.jsonl", entry)


def user_post_fork(server, worker):
    note("user-post-fork", os.getpid(), events=_names("python.jsonl"))


def user_on_exit(server):
    note("user-on-exit", os.getpid())


def user_pre_request(worker, req):
    note("user-pre-request", os.getpid())


def _names(name):
    try:
        with open(os.path.join(HERE, name)) as f:
            # another worker may be appending: its last line may be half written
            return [(e["event"], e["process"]["pid"])
                    for e in map(json.loads, (line for line in f if line.endswith("\\n")))]
    except FileNotFoundError:
        return []
'''

INI = '''
[DEFAULT]
shared = from-default

[app:main]
use = call:gapp:main
forksafe.event_log = %(here)s/native.jsonl
test.greeting = hello %(shared)s
test.multi =
    one
    two
test.include = {include}

[forksafe]
* =
    dl:{event_log}:record
    python:fsrec:record
'''

ALL_HOOKS = '''
from pyramid_forksafe.containers.gunicorn import *  # noqa: F401,F403
'''

HOOKS_WITH_USER = '''
import fsrec
from pyramid_forksafe.containers import gunicorn as forksafe

globals().update(forksafe.hooks(post_fork=fsrec.user_post_fork, on_exit=fsrec.user_on_exit,
                                pre_request=fsrec.user_pre_request))
'''

LEGACY_HOOKS = '''
from pyramid_forksafe.containers.gunicorn import pre_fork, post_fork, post_worker_init  # noqa
'''

def with_hooks(hooks, extra=""):
    """A gunicorn config: the hooks, then more lines (dedented)."""
    return hooks + textwrap.dedent(extra)


COMMON = '''
bind = "127.0.0.1:{port}"
pidfile = "{pidfile}"
workers = {workers}
graceful_timeout = 30
timeout = 30
'''


class Gunicorn(ServerProcess):
    """One gunicorn in its own temp dir."""

    name = "gunicorn"

    def __init__(self, testcase, conf, ini=INI, workers=2, include=True, extra_files=None):
        self.testcase = testcase
        self.dir = tempfile.mkdtemp(prefix="forksafe-gunicorn-")
        testcase.addCleanup(shutil.rmtree, self.dir, True)
        self.port = free_port()
        self.pidfile = os.path.join(self.dir, "gunicorn.pid")
        self.log = os.path.join(self.dir, "gunicorn.log")
        self.ini = os.path.join(self.dir, "app.ini")
        self.conf = os.path.join(self.dir, "gunicorn.conf.py")
        self.workers = workers
        # the ini records every event: once the workers are ready, the
        # arbiter's generation-ready is waited for too
        self.records_all = ini is INI
        self.proc = None
        values = {"dir": self.dir, "port": self.port, "pidfile": self.pidfile,
                  "workers": workers, "event_log": EVENT_LOG,
                  "include": "true" if include else "false"}
        files = {"gapp.py": GAPP, "fsrec.py": FSREC, "app.ini": ini.format(**values),
                 "gunicorn.conf.py": conf.format(**values) + COMMON.format(**values)}
        files.update(extra_files or {})
        for name, text in files.items():
            with open(os.path.join(self.dir, name), "w") as f:
                f.write(text)

    def env(self):
        return dict(os.environ, PYTHONPATH=os.pathsep.join([PYTHON_PACKAGE, self.dir]),
                    PYTHONDONTWRITEBYTECODE="1", FORKSAFE_LIBRARY=LIBRARY)

    def start(self, *args, wait_ready=True):
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(
                [GUNICORN, "--paste", self.ini, "-c", self.conf, *args],
                cwd=self.dir, env=self.env(), stdin=subprocess.DEVNULL, stdout=logf,
                stderr=subprocess.STDOUT, start_new_session=True)
        self.testcase.addCleanup(self.kill)
        if wait_ready:
            self.wait_events("worker-ready", self.workers)
            if self.records_all:
                self.wait_events("generation-ready", 1)
            self.assertPidfile()
        return self

    def assertPidfile(self):
        wait_for(lambda: os.path.exists(self.pidfile), what="the pidfile")
        with open(self.pidfile) as f:
            self.testcase.assertEqual(int(f.read().strip()), self.proc.pid)

    def run_to_exit(self, *args, timeout=60):
        self.start(*args, wait_ready=False)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("gunicorn did not exit:\n" + self.log_text()) from None

    @property
    def master_pid(self):
        return self.proc.pid

    def died(self):
        return self.proc is not None and self.proc.poll() is not None

    def wait_events(self, name, count, file="native.jsonl", timeout=60, **match):
        def enough():
            if self.died():
                raise AssertionError("gunicorn exited (%s) while waiting for %d %s:\n%s"
                                     % (self.proc.returncode, count, name, self.log_text()))
            return len(self.events(file, name, **match)) >= count
        try:
            wait_for(enough, timeout=timeout, what="%d %s events" % (count, name))
        except AssertionError as e:
            raise AssertionError("%s\n%s" % (e, self.log_text()[-6000:])) from None
        return self.events(file, name, **match)

    def get(self, path="/", timeout=30):
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.port, path),
                                    timeout=timeout) as r:
            return json.loads(r.read().decode())

    def stop(self, signum=None, timeout=90):
        # graceful_timeout is 30 s: the arbiter may wait that long for a worker
        return super().stop(signum, timeout)

    def wait_reaped(self, pid):
        """Until the arbiter has reaped worker PID (gone from /proc, zombie
        included): until then gunicorn still counts it in WORKERS, so its id
        is not free for a new worker."""
        wait_for(lambda: not os.path.exists("/proc/%d" % pid),
                 what="worker %d reaped by the arbiter" % pid)

    def events(self, file="native.jsonl", name=None, **match):
        lines = read_jsonl(os.path.join(self.dir, file))
        if name:
            lines = [e for e in lines if e["event"] == name]
        for key, value in match.items():
            lines = [e for e in lines if e.get(key) == value]
        return lines

    def notes(self, what=None):
        return [n for n in self.events("notes.jsonl") if what is None or n["what"] == what]

    def sequences(self, file="native.jsonl"):
        """{pid: (kind, id, [events in order])}"""
        out = collections.OrderedDict()
        for e in self.events(file):
            p = e["process"]
            out.setdefault(p["pid"], (p["kind"], p["id"], []))[2].append(e["event"])
        return out


def paste_config(ini):
    """PasteDeploy's (local_conf, global_conf) for [app:main] of INI."""
    from paste.deploy import appconfig

    # `use = call:gapp:main` is resolved: gapp (and what it imports) from the
    # instance's dir, for this call only
    path = [os.path.dirname(ini), PYTHON_PACKAGE]
    sys.path[:0] = path
    try:
        conf = appconfig("config:" + ini)
    finally:
        del sys.path[:len(path)]
        for name in ("gapp", "fsrec"):
            sys.modules.pop(name, None)
    return dict(conf.local_conf), dict(conf.global_conf)


def setUpModule():
    for path, what in ((LIBRARY, "build/libforksafe.so"), (EVENT_LOG, "the event_log example"),
                       (GUNICORN, "gunicorn (Debian: gunicorn)")):
        if not os.path.exists(path):
            raise AssertionError("%s not found at %s: run `make` at the repository root"
                                 % (what, path))


class GunicornLifecycleTest(unittest.TestCase):
    maxDiff = None

    def check_sequences(self, g, file, workers, preloaded=True):
        sequences = g.sequences(file)
        arbiter = sequences.pop(g.master_pid)
        self.assertEqual(arbiter[:2], ("master", 0))
        expected = (["master-start"] + ["pre-fork", "post-fork-parent"] * workers
                    + ["generation-ready", "master-exit"])
        if preloaded:
            self.assertEqual(arbiter[2], expected, g.log_text())
        self.assertEqual(sorted(k for k, _, _ in sequences.values()), ["worker"] * workers)
        self.assertEqual(sorted(i for _, i, _ in sequences.values()), list(range(1, workers + 1)))
        for kind, wid, names in sequences.values():
            self.assertEqual(names, ["post-fork", "worker-ready", "worker-exit"], g.log_text())
        return arbiter, sequences

    def test_every_event_preloaded(self):
        g = Gunicorn(self, with_hooks(ALL_HOOKS, '''
            forksafe_subscribe = [
                "post-fork,worker-ready python:fsrec:record_config",
                "worker-ready exec:cat > {dir}/exec-$FORKSAFE_PID.json",
                # exec: in the arbiter, whose SIGCHLD handler reaps with waitpid(-1)
                "master-start,pre-fork,post-fork-parent,generation-ready,master-exit "
                "exec:(cat; echo) >> {dir}/arbiter-exec.jsonl",
            ]
        ''')).start("--preload")
        status = g.stop()
        self.assertEqual(status, 0, g.log_text())
        native = g.events()
        arbiter, workers = self.check_sequences(g, "native.jsonl", 2)
        self.check_sequences(g, "python.jsonl", 2)
        self.check_sequences(g, "pyramid.jsonl", 2)
        # children: pre-fork names the id, post-fork-parent adds the pid
        forks = [e["child"] for e in native if e["event"] == "pre-fork"]
        self.assertEqual(forks, [{"kind": "worker", "id": 1, "respawn": 0},
                                 {"kind": "worker", "id": 2, "respawn": 0}])
        parents = {e["child"]["pid"]: e["child"] for e in native
                   if e["event"] == "post-fork-parent"}
        self.assertEqual(set(parents), set(workers))
        for pid, (kind, wid, _) in workers.items():
            self.assertEqual(parents[pid], {"kind": "worker", "id": wid, "pid": pid, "respawn": 0})
        self.assertEqual([e["reason"] for e in native if e["event"] == "worker-exit"],
                         ["shutdown", "shutdown"])
        self.assertEqual([e["reason"] for e in g.events(name="master-exit")], ["shutdown"])
        # the same payload for the native handler, the python: handler and the
        # Pyramid subscriber: keys and values (except the time of delivery)
        local_conf, global_conf = paste_config(g.ini)
        self.assertEqual(local_conf["test.multi"], "\none\ntwo")
        by_key = {}
        for file in ("native.jsonl", "python.jsonl", "pyramid.jsonl"):
            for e in g.events(file):
                self.assertEqual(e["settings"], local_conf)
                self.assertEqual(e["global_settings"], global_conf)
                self.assertEqual(e["container"], "gunicorn")
                self.assertEqual(e["generation"], 0)
                self.assertEqual(e["process"]["ppid"],
                                 g.master_pid if e["process"]["kind"] == "worker"
                                 else os.getpid())
                for extra in ("gapp_imported", "replayed", "class"):
                    e.pop(extra, None)
                e.pop("time")
                key = (e["event"], e["process"]["pid"], (e.get("child") or {}).get("id"))
                by_key.setdefault(key, []).append(e)
        for key, copies in by_key.items():
            self.assertEqual(len(copies), 3, key)
            self.assertEqual(copies[0], copies[1], key)
            self.assertEqual(copies[0], copies[2], key)
        # python: and exec: from the gunicorn config, after the section
        self.assertEqual(sorted((e["event"], e["process"]["id"])
                                for e in g.events("python_config.jsonl")),
                         [("post-fork", 1), ("post-fork", 2),
                          ("worker-ready", 1), ("worker-ready", 2)])
        for pid in workers:
            with open(os.path.join(g.dir, "exec-%d.json" % pid)) as f:
                self.assertEqual(json.load(f)["event"], "worker-ready")
        self.assertEqual([e["event"] for e in g.events("arbiter-exec.jsonl")], arbiter[2])
        self.assertNotIn("failed", g.log_text())
        # Pyramid: the included registry heard everything in the arbiter
        # (preloaded) and in the workers, nothing replayed
        classes = [e["class"] for e in g.events("pyramid.jsonl")
                   if e["process"]["pid"] == g.master_pid]
        self.assertEqual(classes[0], "ApplicationMasterStart")
        self.assertEqual(classes[-1], "ApplicationMasterExit")
        self.assertFalse(any(e["replayed"] for e in g.events("pyramid.jsonl")))
        # the app was loaded once, in the arbiter
        self.assertEqual([n["pid"] for n in g.notes("app-loaded")], [g.master_pid])

    def test_preload_off_leaves_the_app_unloaded_in_the_arbiter(self):
        g = Gunicorn(self, ALL_HOOKS).start()
        answer = g.get("/")
        self.assertEqual(g.stop(), 0, g.log_text())
        loaded = [n["pid"] for n in g.notes("app-loaded")]
        self.assertNotIn(g.master_pid, loaded)
        self.assertEqual(len(loaded), 2)
        self.assertIn(answer["pid"], loaded)
        # every arbiter event ran with the app module not even imported there
        arbiter = [e for e in g.events("python.jsonl") if e["process"]["pid"] == g.master_pid]
        self.assertEqual([e["event"] for e in arbiter],
                         ["master-start", "pre-fork", "post-fork-parent", "pre-fork",
                          "post-fork-parent", "generation-ready", "master-exit"])
        self.assertFalse(any(e["gapp_imported"] for e in arbiter))
        # and no registry heard them (none exists there)
        pyramid = g.events("pyramid.jsonl")
        self.assertFalse([e for e in pyramid if e["process"]["pid"] == g.master_pid])
        # each worker's registry, made after its post-fork, gets it replayed
        # before worker-ready
        for pid in loaded:
            mine = [(e["event"], e["replayed"]) for e in pyramid if e["process"]["pid"] == pid]
            self.assertEqual(mine, [("post-fork", True), ("worker-ready", False),
                                    ("worker-exit", False)])
        self.check_sequences(g, "native.jsonl", 2)

    def test_registry_without_the_include(self):
        # the app does not include pyramid_forksafe: the loaded app's
        # registry still hears every event (preload: in the arbiter too)
        g = Gunicorn(self, ALL_HOOKS, include=False).start("--preload")
        self.assertEqual(g.stop(), 0, g.log_text())
        self.check_sequences(g, "pyramid.jsonl", 2)

    def test_sigkilled_worker_is_a_child_death(self):
        g = Gunicorn(self, ALL_HOOKS).start("--preload")
        victim = g.events(name="worker-ready", file="native.jsonl")[0]["process"]
        os.kill(victim["pid"], signal.SIGKILL)
        death = g.wait_events("child-death", 1)[0]
        self.assertEqual(death["process"]["pid"], g.master_pid)
        self.assertEqual(death["child"], {"kind": "worker", "id": victim["id"],
                                          "pid": victim["pid"], "respawn": 0,
                                          "status": signal.SIGKILL, "signal": signal.SIGKILL,
                                          "cause": "signal"})
        # gunicorn forks a replacement into the same id: respawn 1
        ready = g.wait_events("worker-ready", 3)
        self.assertEqual((ready[-1]["process"]["id"], ready[-1]["respawn"]), (victim["id"], 1))
        forks = g.events(name="pre-fork")
        self.assertEqual(forks[-1]["child"], {"kind": "worker", "id": victim["id"],
                                              "respawn": 1})
        # the Pyramid subscriber heard it in the arbiter too
        self.assertEqual(len(g.events("pyramid.jsonl", "child-death")), 1)
        self.assertEqual(g.stop(), 0, g.log_text())
        # the killed worker ran no worker-exit; the others did
        exits = {e["process"]["pid"] for e in g.events(name="worker-exit")}
        self.assertNotIn(victim["pid"], exits)
        self.assertEqual(len(exits), 2)
        # a graceful stop is no child-death
        self.assertEqual(len(g.events(name="child-death")), 1)

    def test_user_hooks_are_combined(self):
        g = Gunicorn(self, HOOKS_WITH_USER).start("--preload")
        g.get("/")
        self.assertEqual(g.stop(), 0, g.log_text())
        user = g.notes("user-post-fork")
        self.assertEqual(len(user), 2)
        for note in user:
            # forksafe's post-fork ran first, in that worker
            self.assertIn(["post-fork", note["pid"]], note["events"])
        self.assertEqual([n["pid"] for n in g.notes("user-on-exit")], [g.master_pid])
        self.assertEqual(len(g.notes("user-pre-request")), 1)
        self.check_sequences(g, "native.jsonl", 2)

    def test_hup_reload(self):
        g = Gunicorn(self, ALL_HOOKS).start("--preload")
        # the settings are read again on reload
        with open(g.ini) as f:
            text = f.read()
        with open(g.ini, "w") as f:
            f.write(text.replace("test.greeting = hello", "test.greeting = bonjour"))
        os.kill(g.master_pid, signal.SIGHUP)
        g.wait_events("worker-ready", 4)
        g.wait_events("worker-exit", 2, reason="reload")
        g.wait_events("generation-ready", 2)
        self.assertEqual(g.stop(), 0, g.log_text())
        arbiter = [e for e in g.events() if e["process"]["pid"] == g.master_pid]
        names = [(e["event"], e["generation"], e.get("reason")) for e in arbiter]
        self.assertEqual(names[:6], [("master-start", 0, None), ("pre-fork", 0, None),
                                     ("post-fork-parent", 0, None), ("pre-fork", 0, None),
                                     ("post-fork-parent", 0, None),
                                     ("generation-ready", 0, None)])
        self.assertEqual(names[6:8], [("master-exit", 0, "reload"), ("master-start", 1, None)])
        self.assertEqual(names[-1], ("master-exit", 1, "shutdown"))
        self.assertEqual(arbiter[6]["settings"]["test.greeting"], "hello from-default")
        self.assertEqual(arbiter[7]["settings"]["test.greeting"], "bonjour from-default")
        # the new workers: generation 1, fresh ids while the old ones live
        new = g.events(name="worker-ready", generation=1)
        self.assertEqual(sorted(e["process"]["id"] for e in new), [3, 4])
        old_exits = g.events(name="worker-exit", generation=0)
        self.assertEqual(sorted((e["process"]["id"], e["reason"]) for e in old_exits),
                         [(1, "reload"), (2, "reload")])
        self.assertEqual(sorted(e["reason"] for e in g.events(name="worker-exit", generation=1)),
                         ["shutdown", "shutdown"])
        self.assertFalse(g.events(name="child-death"))
        # generation-ready again, for the new workers only
        ready = g.events(name="generation-ready")
        self.assertEqual(len(ready), 2)
        self.assert_generation_ready(g, ready[1], 1, {e["process"]["id"]: e["process"]["pid"]
                                                      for e in new})

    def assert_generation_ready(self, g, event, generation, pids):
        """EVENT, a generation-ready in the arbiter, lists exactly PIDS ({id: pid})."""
        self.assertEqual(event["process"], {"kind": "master", "id": 0, "pid": g.master_pid,
                                            "ppid": os.getpid()})
        self.assertEqual(event["generation"], generation)
        self.assertNotIn("reason", event)
        self.assertEqual({w["id"]: w["pid"] for w in event["workers"]}, pids)
        self.assertEqual([w["id"] for w in event["workers"]], sorted(pids))
        for w in event["workers"]:
            self.assertEqual(set(w), {"id", "pid", "ms"})
            self.assertTrue(0 <= w["ms"] <= event["elapsed_ms"], event)

    def test_generation_ready(self):
        # every worker's worker-ready waits for the test's word
        g = Gunicorn(self, with_hooks(ALL_HOOKS, '''
            forksafe_timeout = 120
            forksafe_subscribe = [
                "worker-ready exec:while [ ! -e {dir}/release ]; do sleep 0.05; done",
            ]
        '''), workers=3).start("--preload", wait_ready=False)
        self.addCleanup(lambda: open(os.path.join(g.dir, "release"), "w").close())
        held = {e["process"]["id"]: e["process"]["pid"] for e in g.wait_events("worker-ready", 3)}
        # one dies before it is ready: its replacement is waited for
        os.kill(held[2], signal.SIGKILL)
        g.wait_events("worker-ready", 4)
        replacement = g.events(name="worker-ready")[3]["process"]
        self.assertEqual(replacement["id"], 2)
        self.assertEqual(g.events(name="generation-ready"), [])
        open(os.path.join(g.dir, "release"), "w").close()
        event = g.wait_events("generation-ready", 1)[0]
        self.assert_generation_ready(g, event, 0, {1: held[1], 2: replacement["pid"],
                                                   3: held[3]})
        for file in ("python.jsonl", "pyramid.jsonl"):
            copy = g.wait_events("generation-ready", 1, file=file)[0]
            self.assertEqual((copy["workers"], copy["elapsed_ms"]),
                             (event["workers"], event["elapsed_ms"]), file)
        self.assertEqual(g.events("pyramid.jsonl", "generation-ready")[0]["class"],
                         "ApplicationGenerationReady")
        # a respawn is no new generation: the killed worker's replacement
        # is ready (the arbiter was woken and looked) and nothing more came
        os.kill(held[1], signal.SIGKILL)
        g.wait_events("worker-ready", 5)
        g.wait_events("post-fork-parent", 5)
        self.assertEqual(g.stop(), 0, g.log_text())
        self.assertEqual(len(g.events(name="generation-ready")), 1)

    def test_worker_timeout_is_harakiri(self):
        # --timeout 5: an idle sync worker tells the arbiter it lives every
        # 2.5 s, so only the request below (much longer than the timeout)
        # gets it aborted, not a slow boot or a stretch without CPU time.
        g = Gunicorn(self, ALL_HOOKS, workers=1).start("--preload", "--timeout", "5")
        victim = g.events(name="worker-ready")[0]["process"]
        with self.assertRaises(OSError):
            g.get("/sleep?s=120", timeout=90)
        exit_event = g.wait_events("worker-exit", 1)[0]
        self.assertEqual((exit_event["process"]["pid"], exit_event["reason"]),
                         (victim["pid"], "harakiri"))
        ready = g.wait_events("worker-ready", 2)
        self.assertEqual((ready[-1]["process"]["id"], ready[-1]["respawn"]), (1, 1))
        self.assertEqual(g.stop(), 0, g.log_text())
        # it ran its worker-exit: no child-death
        self.assertFalse(g.events(name="child-death"))

    def test_ttou_is_cheaper_and_ttin_reuses_the_id(self):
        g = Gunicorn(self, ALL_HOOKS, workers=2).start("--preload")
        os.kill(g.master_pid, signal.SIGTTOU)
        gone = g.wait_events("worker-exit", 1)[0]
        self.assertEqual(gone["reason"], "cheaper")
        # its id is free once the arbiter reaped it (not at its worker-exit)
        g.wait_reaped(gone["process"]["pid"])
        os.kill(g.master_pid, signal.SIGTTIN)
        ready = g.wait_events("worker-ready", 3)[-1]
        self.assertEqual((ready["process"]["id"], ready["respawn"]),
                         (gone["process"]["id"], 1))
        self.assertEqual(g.stop(), 0, g.log_text())

    def test_max_requests_reason(self):
        g = Gunicorn(self, ALL_HOOKS, workers=1).start("--preload", "--max-requests", "2")
        for _ in range(2):
            g.get("/")
        exit_event = g.wait_events("worker-exit", 1)[0]
        self.assertEqual(exit_event["reason"], "max-requests")
        g.wait_events("worker-ready", 2)
        self.assertEqual(g.stop(), 0, g.log_text())

    def test_on_error_exit_respawns_the_worker(self):
        flag = "{dir}/failed-once"
        g = Gunicorn(self, with_hooks(ALL_HOOKS, '''
            forksafe_subscribe = [
                "worker-ready id=1 on-error=exit exec:test -e %s || {{ touch %s; exit 3; }}"]
        ''' % (flag, flag)), workers=2)
        g.start("--preload", wait_ready=False)
        g.wait_events("worker-ready", 3)
        g.wait_events("worker-exit", 1)
        self.assertIn("on-error=exit: worker 1", g.log_text())
        self.assertEqual(g.stop(), 0, g.log_text())
        first = g.events(name="worker-exit")[0]
        self.assertEqual((first["process"]["id"], first["respawn"], first["reason"]),
                         (1, 0, "exit"))
        self.assertEqual(sorted((e["process"]["id"], e["respawn"])
                                for e in g.events(name="post-fork")), [(1, 0), (1, 1), (2, 0)])

    def test_on_error_fatal_stops_gunicorn(self):
        g = Gunicorn(self, with_hooks(ALL_HOOKS, '''
            forksafe_subscribe = ["post-fork id=2 on-error=fatal exec:exit 1"]
            forksafe_verbose = True
        '''))
        status = g.run_to_exit("--preload")
        self.assertNotEqual(status, 0, g.log_text())
        self.assertIn("on-error=fatal: stopping gunicorn after a failed post-fork handler",
                      g.log_text())
        self.assertEqual([e["reason"] for e in g.events(name="master-exit")], ["shutdown"])

    def test_bad_subscription_stops_the_start(self):
        g = Gunicorn(self, with_hooks(ALL_HOOKS, '''
            forksafe_subscribe = ["post-fork exec:true", "post_fork exec:true"]
        '''))
        status = g.run_to_exit("--preload")
        self.assertEqual(status, 1, g.log_text())
        self.assertIn("[forksafe] %s (forksafe_subscribe):2: unknown event 'post_fork' "
                      "(did you mean 'post-fork'?)" % g.conf, g.log_text())
        self.assertFalse(g.events(), "no event before the configuration is valid")
        self.assertNotIn("Booting worker", g.log_text())

    def test_bad_section_stops_the_start(self):
        ini = INI.replace("python:fsrec:record", "python:fsrec:no_such_function")
        g = Gunicorn(self, ALL_HOOKS, ini=ini)
        self.assertEqual(g.run_to_exit("--preload"), 1, g.log_text())
        self.assertRegex(g.log_text(),
                         r"\[forksafe\] %s:\d+: handler 'python:fsrec:no_such_function': "
                         r"cannot load python:fsrec:no_such_function" % re.escape(g.ini))

    def test_legacy_hooks_only(self):
        # 0.2's three hooks alone: forksafe configures itself at the first
        # pre_fork, with a warning (master-start is missed)
        g = Gunicorn(self, LEGACY_HOOKS).start("--preload")
        self.assertEqual(g.stop(), 0, g.log_text())
        self.assertIn("the gunicorn on_starting hook is not installed", g.log_text())
        sequences = g.sequences()
        arbiter = sequences.pop(g.master_pid)
        # the first fork's post-fork-parent happens before the arbiter is wrapped
        self.assertEqual(arbiter[2], ["pre-fork", "pre-fork", "post-fork-parent",
                                      "generation-ready"])
        for _, _, names in sequences.values():
            self.assertEqual(names, ["post-fork", "worker-ready"])


# ---------------------------------------------------------------- PostgreSQL


# The correctness runs must not lose a worker to a timeout on a busy
# machine: a worker gunicorn kills adds events (an exact count is asserted)
# and a request cut short is an error.  These bound those runs here, as
# test_postgres.py's TIME_LIMIT and REQUEST_TIMEOUT do under uWSGI.  The
# hazard runs use test_postgres.py's short HAZARD_* bounds and short worker
# timeouts: a shared connection may hang a worker, gunicorn then kills it.
PG_WORKER_TIMEOUT = 30
PG_GRACEFUL_TIMEOUT = 30
PG_REQUEST_TIMEOUT = 30.0
PG_TIME_LIMIT = 180.0
HAZARD_WORKER_TIMEOUT = 4
HAZARD_GRACEFUL_TIMEOUT = 5


class GunicornPostgresTest(unittest.TestCase):
    """test_postgres.py's proof, served by gunicorn with the example's own
    gunicorn.conf.py (preload_app: the app, and its engine, are loaded and
    query the database in the arbiter; 4 workers)."""

    @classmethod
    def setUpClass(cls):
        from pg import PostgresCluster

        cls.pg = PostgresCluster()
        cls.addClassCleanup(cls.pg.stop)
        cls.pg.start()
        cls.databases = iter(range(1, 1000))

    def new_database(self):
        name = "forksafe_gunicorn%d" % next(self.databases)
        return name, self.pg.create_database(name)

    def serve(self, hooks=True, subscribe=True, pyramid_forksafe=False, hazard=False):
        database, url = self.new_database()
        return serve_example(self, url, hooks, subscribe, pyramid_forksafe,
                             hazard=hazard), database

    def load(self, server, time_limit=None, request_timeout=None):
        import test_postgres
        from load import run_load

        result = run_load(server.port, "/db", total=test_postgres.REQUESTS,
                          concurrency=test_postgres.CONCURRENCY,
                          time_limit=time_limit or PG_TIME_LIMIT,
                          request_timeout=request_timeout or PG_REQUEST_TIMEOUT)
        print("\n  %s: %s" % (self.id().rsplit(".", 1)[-1], result.summary()))
        return result

    def hazard_load(self, server):
        import test_postgres

        return self.load(server, time_limit=test_postgres.HAZARD_TIME_LIMIT,
                         request_timeout=test_postgres.HAZARD_REQUEST_TIMEOUT)

    def assert_one_backend_per_worker(self, server, database, result, disposer="recipe"):
        # test_postgres.py's own assertions, on this gunicorn: 0 errors,
        # every worker served on one backend of its own, none the arbiter's
        # (which is still alive), and DISPOSER's line once per worker naming
        # the arbiter's pid
        import test_postgres

        case = test_postgres.PostgresForkTest("test_with_forksafe_each_worker_has_its_own_backend")
        case.pg = self.pg
        return case.assert_one_backend_per_worker(server, database, result, disposer)

    def assert_hazard(self, server, result):
        """test_postgres.py's hazard: errors, a backend shared by several
        workers, or workers on the arbiter's pre-fork backend -- and nothing
        disposed anything."""
        why = "%s\nerrors: %s\nlog:\n%s" % (result.summary(), result.error_samples,
                                            server.log_text()[-6000:])
        startup = next((a["startup"] for a in result.bodies), None)
        shared = {b: pids for b, pids in result.workers_by_backend().items() if len(pids) > 1}
        on_master = {pid for pid, b in result.pairs if startup and b == startup["backend_pid"]}
        print("  hazard: %d errors %s; backends shared by several workers: %s; workers on the "
              "arbiter's pre-fork backend %s: %s"
              % (result.errors, dict(result.error_kinds), shared,
                 startup and startup["backend_pid"], sorted(on_master)))
        self.assertTrue(result.errors > 0 or shared or on_master,
                        "no hazard observed without a post-fork dispose:\n" + why)
        for answer in result.first_by_pid.values():
            self.assertEqual(answer["disposed"], [], why)
        log = server.log_text()
        self.assertNotIn("[forksafe_sqla] worker ", log, why)
        self.assertNotIn("recipe:sqlalchemy", log, why)

    def test_with_forksafe_each_worker_has_its_own_backend(self):
        # production.ini as shipped: `post-fork = recipe:sqlalchemy`
        server, database = self.serve()
        result = self.load(server)
        self.assert_one_backend_per_worker(server, database, result, disposer="recipe")
        # the same production.ini as uWSGI: its hook:print handler prints
        # under gunicorn too, in every worker
        log = server.log_text()
        self.assertEqual(log.count("[forksafe_sqla] a worker is ready\n"), 4, log)
        self.assertNotIn("uWSGI hook action", log)
        # and the whole life cycle was recorded by the example's native handler
        self.assertEqual(server.stop(), 0, server.log_text())
        names = collections.Counter(e["event"] for e in server.events())
        self.assertEqual(names, {"master-start": 1, "pre-fork": 4, "post-fork-parent": 4,
                                 "post-fork": 4, "worker-ready": 4, "worker-exit": 4,
                                 "generation-ready": 1, "master-exit": 1})

    def test_the_recipe_holds_for_a_respawned_worker(self):
        # a worker SIGKILLed after it served: the arbiter forks its
        # replacement from the same pool, and the replacement drops it too
        server, _ = self.serve()
        first = self.load(server)
        self.assertEqual(first.errors, 0, first.summary())
        victim = sorted(first.worker_pids)[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(server.events("worker-ready")) > 4,
                 what="the killed worker's replacement to be ready")
        replacement = server.events("worker-ready")[-1]["process"]["pid"]
        result = self.load(server)
        why = "%s\n%s" % (result.summary(), server.log_text()[-6000:])
        self.assertEqual(result.errors, 0, why)
        self.assertIn(replacement, result.worker_pids, why)
        self.assertNotIn(victim, result.worker_pids, why)
        self.assertNotIn(result.bodies[0]["startup"]["backend_pid"], result.backend_pids, why)
        self.assertEqual(len(result.backends_by_worker()[replacement]), 1, why)
        self.assertEqual(result.first_by_pid[replacement]["pool_dropped_from"],
                         server.master_pid, why)
        self.assertNotIn("will inherit", server.log_text(), why)

    def test_pyramid_forksafe_subscriber_instead(self):
        # the example's own dispose_engine, as a Pyramid subscriber of
        # pyramid_forksafe's ApplicationPostFork, instead of the recipe
        server, database = self.serve(subscribe=False, pyramid_forksafe=True)
        result = self.load(server)
        self.assert_one_backend_per_worker(server, database, result, disposer="app")

    def test_without_the_recipe_line_the_hazard_shows(self):
        # the same production.ini minus `post-fork = recipe:sqlalchemy`; the
        # forksafe hooks are on (every other handler runs)
        server, _ = self.serve(subscribe=False, hazard=True)
        result = self.hazard_load(server)
        self.assert_hazard(server, result)
        log = server.log_text()
        self.assertEqual(len(server.events("post-fork")), 4, log[-4000:])
        # and forksafe said, at each fork, what the worker would inherit
        self.assertGreaterEqual(log.count("will inherit fd"), 4, log[-4000:])

    def test_without_the_forksafe_hooks_the_hazard_shows(self):
        # the example's gunicorn.conf.py minus its forksafe hooks: the
        # [forksafe] section (the recipe line included) is never read
        server, _ = self.serve(hooks=False, hazard=True)
        result = self.hazard_load(server)
        self.assert_hazard(server, result)
        self.assertFalse(server.events(), "no forksafe event without the hooks")


def _substitute(text, name, old, new, count=1):
    """TEXT with OLD replaced by NEW, which must occur exactly COUNT times
    (so that an edit of the example cannot silently change what is tested)."""
    found = text.count(old)
    assert found == count, "%s: expected %d x %r, found %d" % (name, count, old, found)
    return text.replace(old, new)


def example_ini(url, record, subscribe=True, pyramid_forksafe=False, recipe=None):
    """The example's production.ini, with test_postgres.py's substitutions:
    the database URL and the event recorder; SUBSCRIBE=False drops the
    `post-fork = recipe:sqlalchemy` line, RECIPE replaces its handler."""
    import test_postgres

    with open(os.path.join(EXAMPLE, "production.ini")) as f:
        text = f.read()

    def sub(old, new, count=1):
        nonlocal text
        text = _substitute(text, "production.ini", old, new, count)

    sub(re.search(r"^sqlalchemy\.url = sqlite:.*$", text, re.M).group(0),
        "sqlalchemy.url = %s" % url)
    sub(re.search(r"^forksafe.event_log = .*$", text, re.M).group(0),
        "forksafe.event_log = %s" % record)
    sub("* = dl:%(here)s/../../build/examples/event_log.so:record",
        "* = dl:%s:record" % EVENT_LOG)
    if not subscribe:
        sub(test_postgres.SUBSCRIPTION + "\n", "")
    elif recipe is not None:
        sub(test_postgres.SUBSCRIPTION, "post-fork = " + recipe)
    if pyramid_forksafe:
        sub("forksafe_sqla.pyramid_forksafe = false", "forksafe_sqla.pyramid_forksafe = true")
    return text


def example_conf(port, hooks=True):
    """The example's gunicorn.conf.py, with only its directory (HERE, which
    it computes from its own path; pythonpath and the python/ fallback use
    it) and the port substituted; HOOKS=False drops the forksafe hooks.
    What the proof relies on -- the app preloaded in the arbiter, 4
    workers -- must be there as shipped."""
    import test_postgres

    with open(os.path.join(EXAMPLE, "gunicorn.conf.py")) as f:
        text = f.read()

    def sub(old, new, count=1):
        nonlocal text
        text = _substitute(text, "gunicorn.conf.py", old, new, count)

    sub("HERE = os.path.dirname(os.path.abspath(__file__))\n", "HERE = %r\n" % EXAMPLE)
    sub('bind = "127.0.0.1:8080"\n', 'bind = "127.0.0.1:%d"\n' % port)
    sub("serving on http://127.0.0.1:8080/", "serving on http://127.0.0.1:%d/" % port)
    for line in ("preload_app = True\n", "workers = %d\n" % test_postgres.WORKERS,
                 "pythonpath = HERE  # forksafe_sqla\n"):
        sub(line, line)  # there, once
    if not hooks:
        sub("globals().update(forksafe.hooks())\n", "")
    return text


def serve_example(testcase, url, hooks=True, subscribe=True, pyramid_forksafe=False,
                  extra_conf="", wait=True, hazard=None, recipe=None):
    """`gunicorn --paste production.ini -c gunicorn.conf.py`: the example's
    own files (example_ini, example_conf) against the database URL, in a
    temp dir, with the test's pidfile and timeouts (short ones if HAZARD,
    by default when not HOOKS) and EXTRA_CONF appended to the config;
    RECIPE, if given, is the post-fork handler instead of the file's.
    Stopped and killed as TESTCASE's cleanups; waited for until ready
    unless not WAIT."""
    import test_postgres

    if hazard is None:
        hazard = not hooks
    directory = tempfile.mkdtemp(prefix="forksafe-gunicorn-pg-")
    testcase.addCleanup(shutil.rmtree, directory, True)
    record = os.path.join(directory, "events.jsonl")
    ini = os.path.join(directory, "production.ini")
    with open(ini, "w") as f:
        f.write(example_ini(url, record, subscribe, pyramid_forksafe, recipe))
    port = free_port()
    pidfile = os.path.join(directory, "gunicorn.pid")
    conf_text = example_conf(port, hooks)
    conf_text += textwrap.dedent('''
        # the test's
        pidfile = %r
        timeout = %d
        graceful_timeout = %d
    ''' % (pidfile, HAZARD_WORKER_TIMEOUT if hazard else PG_WORKER_TIMEOUT,
           HAZARD_GRACEFUL_TIMEOUT if hazard else PG_GRACEFUL_TIMEOUT))
    conf_text += textwrap.dedent(extra_conf)
    conf = os.path.join(directory, "gunicorn.conf.py")
    with open(conf, "w") as f:
        f.write(conf_text)
    log = os.path.join(directory, "gunicorn.log")
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", FORKSAFE_LIBRARY=LIBRARY,
               PYTHONPATH=PYTHON_PACKAGE)
    with open(log, "ab") as logf:
        proc = subprocess.Popen([GUNICORN, "--paste", ini, "-c", conf],
                                cwd=directory, env=env, stdin=subprocess.DEVNULL,
                                stdout=logf, stderr=subprocess.STDOUT,
                                start_new_session=True)
    server = PgServer(proc, port, record, log, pidfile)
    testcase.addCleanup(server.kill)
    testcase.addCleanup(server.stop)
    if wait:
        server.wait_ready(test_postgres.WORKERS if hooks else 0)
    return server


class PgServer(ServerProcess):
    """What test_postgres.py's assertions read from a server."""

    name = "gunicorn"

    def __init__(self, proc, port, record, log, pidfile):
        self.proc = proc
        self.port = port
        self.record = record
        self.log = log
        self.pidfile = pidfile

    @property
    def master_pid(self):
        return self.proc.pid

    def stop(self, signum=None, timeout=90):
        # graceful_timeout may be 30 s: the arbiter may wait that long
        return super().stop(signum, timeout)

    def wait_ready(self, workers):
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("gunicorn exited (%s):\n%s"
                                     % (self.proc.returncode, self.log_text()))
            if workers:
                return len(self.events("worker-ready")) >= workers
            # no forksafe events to wait for: the workers' boot lines, then
            # a request that does not touch the database
            if self.log_text().count("Booting worker") < 4 or not os.path.exists(self.pidfile):
                return False
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/events.json" % self.port,
                                            timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False
        wait_for(ready, what="gunicorn ready")
        with open(self.pidfile) as f:
            assert int(f.read().strip()) == self.proc.pid

    def events(self, name=None):
        return [e for e in read_jsonl(self.record) if name is None or e["event"] == name]
