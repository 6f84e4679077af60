"""Counters in uWSGI's metrics / stats server, and the dispatch history on
the forksafe-stats socket, read from a real uWSGI like an operator would."""

import json
import os
import signal
import subprocess

from harness import UWSGI, IntegrationCase, Uwsgi, free_port, read_socket, wait_for

BASE = """
[uwsgi]
plugin-dir = {plugin_dir}
plugins = python3,forksafe
master = true
processes = 2
mules = 1
http-socket = 127.0.0.1:{port}
pidfile = {pidfile}
wsgi-file = {app_dir}/simple_app.py
forksafe-settings = %p
forksafe-subscribe = * dl:{recorder}:record
"""

SETTINGS = {"db.password": "hunter2"}


class StatsTest(IntegrationCase):

    def start(self, extra="", ready=2):
        self.stats_port = free_port()
        body = BASE + extra.replace("{stats_port}", str(self.stats_port))
        u = Uwsgi(self, body, settings=SETTINGS)
        u.forksafe_stats = os.path.join(u.dir, "forksafe-stats.sock")
        u.start(wait_ready=ready)
        return u

    def metrics(self):
        document = read_socket("127.0.0.1:%d" % self.stats_port)
        return {name: m["value"] for name, m in document.get("metrics", {}).items()
                if name.startswith("forksafe.")}

    def wait_metrics(self, expected):
        """Waits for one metrics snapshot that holds every value of EXPECTED
        ({name: value}) and returns it.  uWSGI's collector copies the shared
        counters once a second, one by one, while handlers may still be
        running: `fired` goes up when a dispatch starts, `handlers` and
        `failed` when each handler returns, so only a snapshot showing all of
        them proves every dispatch the test asserts on has finished.  The
        stats server is bound by the master loop, possibly after the workers
        are ready: a refused connection is a snapshot not taken yet."""
        seen = {}

        def ready():
            try:
                snapshot = self.metrics()
            except (OSError, ValueError):
                return None
            seen.clear()
            seen.update(snapshot)
            return all(seen.get(name) == value for name, value in expected.items())
        try:
            wait_for(ready, what="forksafe metrics %s" % expected)
        except AssertionError:
            self.fail("forksafe metrics never showed %s; last seen: %s"
                      % ({n: (seen.get(n), v) for n, v in expected.items() if seen.get(n) != v},
                         seen))
        return dict(seen)

    def test_counters_in_the_stats_server_survive_a_killed_worker(self):
        u = self.start("""
enable-metrics = true
stats = 127.0.0.1:{stats_port}
forksafe-subscribe = worker-ready exec:/bin/false
""")
        # 2 workers + 1 mule forked (uWSGI forks the mule after the workers),
        # each worker-ready run through both handlers.
        m = self.wait_metrics({"forksafe.worker-ready.fired": 2,
                               "forksafe.worker-ready.handlers": 4,
                               "forksafe.worker-ready.failed": 2,
                               "forksafe.post-fork.fired": 3,
                               "forksafe.post-fork.handlers": 3,
                               "forksafe.pre-fork.fired": 3,
                               "forksafe.master-start.fired": 1})
        # every name registered for every event.
        self.assertEqual(m["forksafe.post-fork.fired"], 3)
        self.assertEqual(m["forksafe.pre-fork.fired"], 3)
        self.assertEqual(m["forksafe.master-start.fired"], 1)
        self.assertEqual(m["forksafe.worker-ready.handlers"], 4)
        self.assertEqual(m["forksafe.worker-ready.failed"], 2)
        self.assertEqual(m["forksafe.post-fork.failed"], 0)
        self.assertGreater(m["forksafe.worker-ready.max_us"], 0)
        self.assertGreaterEqual(m["forksafe.worker-ready.max_us"],
                                m["forksafe.worker-ready.last_us"])
        self.assertEqual(m["forksafe.child-death.fired"], 0)
        for event in ("master-start", "pre-fork", "post-fork", "post-fork-parent",
                      "worker-ready", "worker-exit", "child-death", "master-exit"):
            for field in ("fired", "handlers", "failed", "last_us", "max_us"):
                self.assertIn("forksafe.%s.%s" % (event, field), m)

        # What the killed worker counted stays; its replacement adds to it.
        victim = [e["process"]["pid"] for e in u.events("worker-ready")
                  if e["process"]["id"] == 1][0]
        os.kill(victim, signal.SIGKILL)
        m = self.wait_metrics({"forksafe.worker-ready.fired": 3,
                               "forksafe.worker-ready.handlers": 6,
                               "forksafe.worker-ready.failed": 3,
                               "forksafe.child-death.fired": 1,
                               "forksafe.child-death.handlers": 1,
                               "forksafe.post-fork.fired": 4,
                               "forksafe.post-fork.handlers": 4})
        self.assertEqual(m["forksafe.child-death.fired"], 1)
        self.assertEqual(m["forksafe.child-death.handlers"], 1)
        self.assertEqual(m["forksafe.post-fork.fired"], 4)
        self.assertEqual(m["forksafe.post-fork.handlers"], 4)
        self.assertEqual(m["forksafe.worker-ready.failed"], 3)
        self.assertEqual(u.stop(), 0)

    def test_history_says_what_ran_where(self):
        u = self.start("""
forksafe-stats = {dir}/forksafe-stats.sock
forksafe-subscribe = post-fork kind=worker exec:/bin/sh -c 'sleep 0.2'
forksafe-subscribe = worker-ready id=2 exec:/bin/sh -c 'exit 7'
forksafe-subscribe = master-start exec:/bin/true postgresql://app:hunter2@db/app
""")
        # worker-ready is recorded before worker 2's failing handler has run;
        # a run is counted before its history record is stamped, and the
        # document reads the counters before the history: wait for both.
        def failure_in_history():
            d = read_socket(u.forksafe_stats)
            return d if (d["events"]["worker-ready"]["failed"] and
                         any(h["result"] == "failed" for h in d["history"])) else None
        doc = wait_for(failure_in_history, what="worker 2's failed handler in the history")
        self.assertEqual(doc["pid"], u.master_pid)
        self.assertEqual(doc["container"], "uwsgi")
        self.assertEqual(doc["generation"], 0)
        self.assertEqual(doc["history_size"], 128)
        self.assertNotIn("hunter2", json.dumps(doc))
        specs = [s["handler"] for s in doc["subscriptions"]]
        self.assertIn("exec:/bin/true postgresql://app:***@db/app", specs)
        self.assertTrue(all(s["source"] == u.ini for s in doc["subscriptions"]), doc["subscriptions"])

        history = doc["history"]
        self.assertEqual([h["seq"] for h in history], sorted(h["seq"] for h in history))
        recorded = {(e["event"], e["process"]["kind"], e["process"]["id"], e["process"]["pid"])
                    for e in u.events()}
        for h in history:
            p = h["process"]
            self.assertIn((h["event"], p["kind"], p["id"], p["pid"]), recorded, h)
        sleeps = [h for h in history if h["handler"] == "exec:/bin/sh -c 'sleep 0.2'"]
        self.assertEqual(sorted(h["process"]["id"] for h in sleeps), [1, 2])
        self.assertTrue(all(h["result"] == "ok" and h["duration_us"] >= 150000 for h in sleeps),
                        sleeps)
        self.assertGreaterEqual(doc["events"]["post-fork"]["max_us"], 150000)
        failed = [h for h in history if h["result"] == "failed"]
        self.assertEqual(len(failed), 1, failed)
        self.assertEqual((failed[0]["event"], failed[0]["process"]["id"]), ("worker-ready", 2))
        self.assertIn("7", failed[0]["error"])
        self.assertEqual(failed[0]["subscription"], 3)
        self.assertEqual(doc["events"]["worker-ready"]["failed"], 1)

        # The operator's own tool reads it too.
        out = subprocess.run([UWSGI, "--connect-and-read", u.forksafe_stats],
                             capture_output=True, timeout=60)
        self.assertEqual(json.loads(out.stdout.decode() or out.stderr.decode())["pid"],
                         u.master_pid)
        self.assertEqual(u.stop(), 0)

    def test_history_ring_and_reload(self):
        u = self.start("""
forksafe-stats = {dir}/forksafe-stats.sock
forksafe-history = 4
""")
        # The workers are ready, but the mule's post-fork and the master's
        # post-fork-parent may still be dispatching: a handler run is counted
        # before its history record is stamped, and the document reads the
        # counters before the history.  Wait until every child's post-fork
        # and post-fork-parent is recorded and every recorded run (the
        # recorder is the only handler) is counted and in the history.
        wait_for(lambda: len(u.events("post-fork")) >= 3 and
                 len(u.events("post-fork-parent")) >= 3, what="mule post-fork, post-fork-parents")
        last = {}

        def settled():
            doc = last["doc"] = read_socket(u.forksafe_stats)
            runs = sum(c["handlers"] for c in doc["events"].values())
            recorded = len([e for e in u.events() if e["event"] != "app-loaded"])
            history = doc["history"]
            return (doc if runs == recorded and history and history[-1]["seq"] == runs - 1
                    else None)
        try:
            doc = wait_for(settled, what="every handler run counted and in the history")
        except AssertionError:
            doc = last["doc"]  # the assertions below say what is wrong with it
        self.assertEqual(doc["history_size"], 4)
        self.assertEqual(len(doc["history"]), 4)
        runs = sum(c["handlers"] for c in doc["events"].values())
        self.assertGreater(runs, 4)
        self.assertEqual(doc["history"][-1]["seq"], runs - 1)

        # A reload re-executes the master: the socket is bound again and the
        # counters start over for the new generation.
        u.send_signal(signal.SIGHUP)
        wait_for(lambda: len(u.events("worker-ready")) >= 4, what="reload")

        def reloaded():
            try:
                return read_socket(u.forksafe_stats)["generation"] == 1
            except (OSError, ValueError):
                return False
        wait_for(reloaded, what="stats after the reload")
        doc = read_socket(u.forksafe_stats)
        self.assertEqual(doc["pid"], u.master_pid)
        self.assertEqual(doc["events"]["master-start"]["fired"], 1)
        self.assertEqual(u.stop(), 0)

    def test_without_metrics_the_log_says_how(self):
        u = self.start("stats = 127.0.0.1:{stats_port}\n")

        def stats_server_up():
            try:
                return read_socket("127.0.0.1:%d" % self.stats_port) is not None
            except (OSError, ValueError):
                return False
        # uWSGI binds its stats server in the master loop, maybe after the
        # workers are ready.
        wait_for(stats_server_up, what="uWSGI's stats server")
        self.assertLogHas(u, "[forksafe] counters are published in the stats server with "
                             "`enable-metrics = true`")
        self.assertEqual(self.metrics(), {})
        self.assertEqual(u.stop(), 0)

    def test_bad_history_is_a_startup_error(self):
        for value in ("-1", "lots", "2000000"):
            u = Uwsgi(self, BASE + "forksafe-history = %s\n" % value, settings=SETTINGS)
            self.assertEqual(u.run_to_exit(), 1)
            with open(u.ini) as f:
                line = [i for i, text in enumerate(f, 1) if text.startswith("forksafe-history")][0]
            self.assertLogHas(u, "[forksafe] %s:%d: forksafe-history must be a number of handler "
                                 "runs between 0 and 1000000, not '%s'" % (u.ini, line, value))
            self.assertEqual(u.events(), [], "nothing may run before a config error")

    def test_bad_stats_address_stops_before_any_fork(self):
        for address, why in (("{dir}/no/such/dir/stats.sock", "No such file or directory"),
                             ("127.0.0.1:http-ish", "Invalid argument"),
                             ("192.0.2.1:9", "Cannot assign requested address")):
            u = Uwsgi(self, BASE + "forksafe-stats = %s\n" % address, settings=SETTINGS)
            self.assertEqual(u.run_to_exit(), 1)
            with open(u.ini) as f:
                line, value = [(i, text.split("=", 1)[1].strip()) for i, text in enumerate(f, 1)
                               if text.startswith("forksafe-stats")][0]
            self.assertLogHas(u, "[forksafe] %s:%d: forksafe-stats cannot listen on '%s': %s"
                              % (u.ini, line, value, why))
            self.assertEqual([e["event"] for e in u.events()], [],
                             "nothing may run before a config error")
