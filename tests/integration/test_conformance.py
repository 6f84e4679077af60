"""One handler module, one production.ini, three servers: uWSGI+forksafe,
gunicorn and Celery deliver the same event names, in the same order per
process, with the same payload keys and the same settings -- differing only
where a server has no such moment (NO_MOMENT, documented in the README)."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import unittest

from harness import APP_DIR, BUILD, ROOT, UWSGI, free_port, read_jsonl, wait_for

sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, APP_DIR)  # simple_app, for PasteDeploy's appconfig

# Events a server has no moment for (see the README's table).
NO_MOMENT = {
    "uwsgi": set(),
    "gunicorn": set(),
    "celery": set(),
}

INI = """
[app:main]
use = call:simple_app:make_app
greeting = hello %(who)s
who = world
python_log = %(here)s/conformance.jsonl

[forksafe]
* = python:handlers:record

[uwsgi]
plugin-dir = {root}
need-plugins = python3,forksafe
master = true
processes = 2
http-socket = 127.0.0.1:{port}
pythonpath = {apps}
paste = config:%p
"""

GUNICORN_CONF = """
import sys
sys.path.insert(0, {python!r})
from pyramid_forksafe.containers import gunicorn as forksafe
globals().update(forksafe.hooks())
workers = 2
preload_app = True
bind = "127.0.0.1:{port}"
pythonpath = {apps!r}
"""


class ConformanceTest(unittest.TestCase):
    maxDiff = None

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="forksafe-conformance-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.port = free_port()
        self.ini = os.path.join(self.dir, "production.ini")
        with open(self.ini, "w") as f:
            f.write(INI.format(root=ROOT, port=self.port, apps=APP_DIR))
        self.log = os.path.join(self.dir, "conformance.jsonl")

    def events(self):
        return read_jsonl(self.log)

    def count(self, name):
        return len([e for e in self.events() if e["event"] == name])

    def ready_workers(self):
        return self.count("worker-ready")

    def forked(self, workers):
        """WORKERS forks complete on record: the master's post-fork-parent
        for each (under uWSGI the last one comes at the master's next cycle,
        possibly after that worker's worker-ready) and each worker's
        worker-ready."""
        return self.count("post-fork-parent") >= workers and self.ready_workers() >= workers

    def spawn(self, argv, env=None):
        out = open(os.path.join(self.dir, "server.log"), "ab")
        proc = subprocess.Popen(argv, cwd=self.dir, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        out.close()

        def reap():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.addCleanup(reap)
        return proc

    def server_log(self, since=0):
        try:
            with open(os.path.join(self.dir, "server.log"), "rb") as f:
                f.seek(since)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def server_log_size(self):
        try:
            return os.path.getsize(os.path.join(self.dir, "server.log"))
        except FileNotFoundError:
            return 0

    def run_server(self, server, kill_a_worker=False):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "python"), APP_DIR]),
                   FORKSAFE_LIBRARY=os.path.join(BUILD, "libforksafe.so"))
        # the servers run one after the other and append to one server.log
        log_start = self.server_log_size()
        if server == "uwsgi":
            proc = self.spawn([UWSGI, "--ini", self.ini], env)
            stop = signal.SIGINT
        elif server == "gunicorn":
            conf = os.path.join(self.dir, "gunicorn.conf.py")
            with open(conf, "w") as f:
                f.write(GUNICORN_CONF.format(python=os.path.join(ROOT, "python"),
                                             port=self.port, apps=APP_DIR))
            proc = self.spawn(["gunicorn", "--paste", self.ini, "-c", conf], env)
            stop = signal.SIGTERM
        else:
            env["FORKSAFE_SETTINGS"] = self.ini
            proc = self.spawn([sys.executable, "-m", "celery", "-A", "celery_app", "worker",
                               "--pool=prefork", "--concurrency=2", "--loglevel=INFO",
                               "--without-heartbeat", "--without-mingle", "--without-gossip"],
                              env)
            stop = signal.SIGTERM
        def started():
            # Celery: also its consumer running ("NAME ready."): a pool child
            # dying before that makes Celery give up ("Could not start worker
            # processes"), and a SIGTERM before it is a stop mid-start.
            # generation-ready too: every server's generation is complete
            # before the test goes on
            return self.forked(2) and self.count("generation-ready") >= 1 and (
                server != "celery" or " ready." in self.server_log(log_start))

        try:
            wait_for(lambda: started() or proc.poll() is not None,
                     what="%s workers ready" % server)
            self.assertIsNone(proc.poll(), self.server_log(log_start)[-3000:])
            if kill_a_worker:
                # killed outright: child-death, then a replacement; compared
                # as of the replacement's worker-ready (Celery 5.2.6's warm
                # shutdown hangs after it lost a pool process, with or
                # without forksafe, so the shutdown is not compared here)
                victim = [e["process"]["pid"] for e in self.events()
                          if e["event"] == "post-fork" and e["process"]["id"] == 1][0]
                os.kill(victim, signal.SIGKILL)
                # the replacement's post-fork-parent too (under uWSGI it
                # comes at the master's next cycle)
                wait_for(lambda: self.forked(3) and self.count("child-death") >= 1,
                         what="%s child-death and a replacement" % server)
                snapshot = self.events()
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, stop)
            try:
                proc.wait(timeout=10 if kill_a_worker else 60)
            except subprocess.TimeoutExpired:
                if not kill_a_worker:
                    raise
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        events = snapshot if kill_a_worker else self.events()
        os.unlink(self.log)
        return events

    def shape(self, server, events):
        """{role: [[event names] per process that held it]} and {event: payload
        keys}, minus NO_MOMENT."""
        roles = {}
        keys = {}
        for e in events:
            if e["event"] in NO_MOMENT[server]:
                continue
            p = e["process"]
            role = "master" if p["kind"] == "master" else "worker %d" % p["id"]
            roles.setdefault((role, p["pid"]), []).append(e["event"])
            keys.setdefault(e["event"], set()).add(tuple(sorted(e)))
        by_role = {}
        for (role, _pid), names in roles.items():
            by_role.setdefault(role, []).append(names)
        return by_role, keys

    def test_same_events_order_payload_and_settings(self):
        self.compare_servers(kill_a_worker=False)

    def test_same_child_death_and_respawn(self):
        results = self.compare_servers(kill_a_worker=True)
        for server, events in results.items():
            with self.subTest(server=server):
                death = [e for e in events if e["event"] == "child-death"][0]
                self.assertEqual(death["child"]["signal"], 9)
                self.assertEqual(death["child"]["cause"], "signal")
                respawned = [e for e in events if e["event"] == "pre-fork"][-1]
                self.assertEqual((respawned["child"]["id"], respawned["child"]["respawn"]), (1, 1))

    def compare_servers(self, kill_a_worker):
        from paste.deploy import appconfig
        expected_settings = dict(appconfig("config:" + self.ini).local_conf)
        results = {server: self.run_server(server, kill_a_worker)
                   for server in ("uwsgi", "gunicorn", "celery")}
        for server, events in results.items():
            with self.subTest(server=server):
                self.assertTrue(events, "%s delivered nothing" % server)
                for e in events:
                    self.assertEqual(e["container"], server)
                    self.assertEqual(e["settings"], expected_settings)
                    self.assertEqual(e["global_settings"]["__file__"], self.ini)
        reference_roles, reference_keys = self.shape("uwsgi", results["uwsgi"])
        for server in ("gunicorn", "celery"):
            with self.subTest(server=server):
                roles, keys = self.shape(server, results[server])
                missing = NO_MOMENT[server]
                self.assertEqual(
                    roles,
                    {role: [[n for n in names if n not in missing] for names in lives]
                     for role, lives in reference_roles.items()})
                self.assertEqual(keys, {k: v for k, v in reference_keys.items()
                                        if k not in missing})
        return results
