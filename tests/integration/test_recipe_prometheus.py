"""recipe:prometheus against a real uWSGI and the real prometheus_client
(Debian's python3-prometheus-client), in its multiprocess mode.

The app (apps/prometheus_app.py) counts every request in a Counter and a
Histogram, sets a ``livesum`` Gauge to 1 in each worker (a python: post-fork
handler: "workers alive"), and scrapes the directory at /metrics with a
``MultiProcessCollector``, as prometheus_client's documentation writes it.
uWSGI runs it with a master and WORKERS workers, ``env =
PROMETHEUS_MULTIPROC_DIR=...`` and, in [forksafe], the one line
``child-death = recipe:prometheus`` (the recipe subscribes itself to
master-start and worker-exit too).

- Requests, then workers SIGKILLed by the pids that answered, their
  respawns waited for (child-death and the new worker-ready), more
  requests, a second round: the scraped counter and the histogram's count
  equal the requests made exactly (the dead workers' counts are kept), the
  live gauge equals the workers alive, and the directory holds no live
  gauge file of a dead worker; after a clean stop, none of any worker.
  The same with `forksafe-subscribe = child-death recipe:prometheus` in
  [uwsgi]; and a graceful reload (SIGHUP, generation 1) keeps the counts.
- Without the line: the same counts, but every killed worker's gauge
  lingers (the gauge says WORKERS + killed): the test can fail.
- A fresh start removes what an earlier run left (a process that counted
  STALE requests and is gone): its count does not reach the new run's
  scrape; ``?wipe=no`` keeps the counts (and says so) but forgets the
  earlier run's live gauges; a file that a running process has mapped (a
  server still writing to the directory) is never removed.
- Start-up errors, each ``[forksafe] FILE:LINE: ...`` naming the recipe's
  line, before any fork, uWSGI exiting non-zero: the variable not set, a
  missing directory, a directory holding a file the library did not write
  (left there), an unknown option, a bad value, an unknown recipe.
- gunicorn (forksafe.gunicorn, the same [forksafe] lines in its --paste
  file): the same kills and counts, with and without the recipe; and USR2,
  where a new master (generation 0, a fresh start) runs beside the old one:
  the old workers' counts survive its start.

Every uWSGI is started with a pidfile, stopped by its pid (SIGINT) and its
process group killed and reaped as a cleanup (harness.Uwsgi); gunicorn
likewise (test_gunicorn.Gunicorn, SIGTERM), the USR2 master by the pid its
pidfile says.  Waits are on
states: events in the recorder's file, processes gone, files.
"""

import os
import re
import signal
import subprocess

from harness import (APP_DIR, ROOT, UWSGI, IntegrationCase, Uwsgi, children, running,
                     wait_exited, wait_for)

PYTHON = "/usr/bin/python3"
PYTHON_PACKAGE = os.path.join(ROOT, "python")
WORKERS = 3
STALE = 1000  # requests an earlier run counted
HELD = 500  # requests a process still running counted

HEAD = """
[uwsgi]
plugin-dir = {plugin_dir}
plugins = python3,forksafe
master = true
processes = %d
http-socket = 127.0.0.1:{port}
pidfile = {pidfile}
python-path = %s
pythonpath = {app_dir}
module = prometheus_app:application
min-worker-lifetime = 0
forkbomb-delay = 0
forksafe-settings = %%p
forksafe-subscribe = post-fork exec:touch {dir}/forked
""" % (WORKERS, PYTHON_PACKAGE)

MULTIPROC_ENV = "env = PROMETHEUS_MULTIPROC_DIR={dir}/metrics\n"

# [forksafe] of the same file: the event recorder, the app's gauge, the recipe.
FORKSAFE = """
[forksafe]
* = dl:{recorder}:record
post-fork = python:prometheus_app:worker_alive
"""

# The start-up errors: no python: handler, whose import of the app would
# make the metrics (and fail on a missing directory) before the recipe's
# line is read.
ERROR_FORKSAFE = """
[forksafe]
* = dl:{recorder}:record
"""

RECIPE = "child-death = recipe:prometheus"

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def clean_env():
    """The test's environment without the variables of prometheus_client's
    multiprocess mode (uWSGI's ini sets the one it needs)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def parse_metrics(text):
    """{(name, labels text): value} of a text exposition."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, "not a sample line: %r" % line
        samples[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return samples


def files_of(directory):
    """{name: pid} of the library's files in DIRECTORY."""
    out = {}
    for name in os.listdir(directory):
        m = re.fullmatch(r"(counter|gauge_[a-z]+|histogram|summary)_([0-9]+)\.db", name)
        if m:
            out[name] = int(m.group(2))
    return out


def live_gauge_pids(directory):
    return {pid for name, pid in files_of(directory).items() if name.startswith("gauge_live")}


class PrometheusCase(IntegrationCase):

    def instance(self, recipe=RECIPE, env_line=MULTIPROC_ENV, forksafe=FORKSAFE, make_dir=True):
        u = Uwsgi(self, HEAD + env_line, settings={},
                  extra_sections=forksafe + (recipe + "\n" if recipe else ""))
        u.metrics = os.path.join(u.dir, "metrics")
        if make_dir:
            os.mkdir(u.metrics)
        return u

    def start(self, u):
        u.start(wait_ready=WORKERS, env=clean_env())
        # run before harness's kill (cleanups run last first)
        self.addCleanup(u.stop)
        return u

    def run_app_script(self, directory, *args):
        """apps/prometheus_app.py as a script, in multiprocess mode on
        DIRECTORY: `stale COUNT` returns the pid of a process that counted
        and is gone (reaped)."""
        env = dict(clean_env(), PROMETHEUS_MULTIPROC_DIR=directory)
        out = subprocess.run([PYTHON, os.path.join(APP_DIR, "prometheus_app.py"), *args],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL, timeout=60, check=True)
        return int(out.stdout.split()[0])

    def hold(self, directory, count):
        """A process that counted COUNT and keeps its files mapped (as a
        server still running on DIRECTORY does) until the test ends:
        (pid, Popen)."""
        env = dict(clean_env(), PROMETHEUS_MULTIPROC_DIR=directory)
        proc = subprocess.Popen([PYTHON, os.path.join(APP_DIR, "prometheus_app.py"), "hold",
                                 str(count)], env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, start_new_session=True)

        def end():
            proc.stdin.close()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        self.addCleanup(end)
        pid = int(proc.stdout.readline())
        self.assertEqual(proc.stdout.readline().strip(), b"ready")
        return pid, proc

    def scrape(self, u):
        return parse_metrics(u.get("/metrics"))

    def counts(self, u):
        """(requests counted, histogram count, workers alive) as scraped."""
        s = self.scrape(u)
        return (s[("app_requests_total", "")], s[("app_request_seconds_count", "")],
                s[("app_workers_alive", "")])

    def request(self, u, n, served):
        """N counted requests; SERVED: {pid: requests it answered}."""
        for _ in range(n):
            pid = int(u.get("/"))
            served[pid] = served.get(pid, 0) + 1

    def workers(self, u):
        return sorted(pid for pid in children(u.master_pid) if running(pid))

    def kill_workers(self, u, victims, killed):
        """SIGKILLs VICTIMS and waits for the master's child-death of each
        and the respawned workers' worker-ready."""
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        killed.extend(victims)
        wait_for(lambda: {e["child"]["pid"] for e in u.events("child-death")} >= set(killed),
                 what="child-death of %s" % killed)
        wait_for(lambda: len(u.events("worker-ready")) >= WORKERS + len(killed),
                 what="%d respawned workers ready" % len(killed))
        ready = [e["process"]["pid"] for e in u.events("worker-ready")]
        live = self.workers(u)
        self.assertEqual(len(live), WORKERS, (live, ready))
        self.assertFalse(set(live) & set(killed))

    def choose(self, u, served, since, count):
        """COUNT live workers to kill, those that answered requests since
        SINCE first (so that the dead take counts with them)."""
        live = self.workers(u)
        answered = sorted((pid for pid in live if served.get(pid, 0) > since.get(pid, 0)),
                          key=lambda pid: -(served[pid] - since.get(pid, 0)))
        rest = [pid for pid in live if pid not in answered]
        victims = (answered + rest)[:count]
        self.assertTrue(victims and victims[0] in answered, (served, live))
        return victims

    def kill_and_count(self, u):
        """The scenario: 30 requests, 2 workers SIGKILLed, 20 requests, 1
        more SIGKILLed, 10 requests.  Returns (requests made, served,
        killed)."""
        served, killed = {}, []
        self.request(u, 30, served)
        self.kill_workers(u, self.choose(u, served, {}, 2), killed)
        before = dict(served)
        self.request(u, 20, served)
        self.kill_workers(u, self.choose(u, served, before, 1), killed)
        self.request(u, 10, served)
        return 60, served, killed


class WorkersDieTest(PrometheusCase):

    def test_counts_kept_and_dead_workers_forgotten(self):
        u = self.start(self.instance())
        made, served, killed = self.kill_and_count(u)
        by_dead = sum(served.get(pid, 0) for pid in killed)
        self.assertGreater(by_dead, 0)
        requests, observed, alive_gauge = self.counts(u)
        print("\n  recipe: %d requests (%d answered by the %d killed workers); scraped: counter "
              "%g, histogram count %g, workers alive %g"
              % (made, by_dead, len(killed), requests, observed, alive_gauge))
        self.assertEqual(requests, made)
        self.assertEqual(observed, made)
        self.assertEqual(alive_gauge, WORKERS)
        live = set(self.workers(u))
        self.assertEqual(live_gauge_pids(u.metrics) - {u.master_pid}, live)
        # the dead workers' counters stay, their live gauges do not
        files = files_of(u.metrics)
        for pid in killed:
            if served.get(pid):
                self.assertIn("counter_%d.db" % pid, files)
                self.assertIn("histogram_%d.db" % pid, files)
            self.assertNotIn("gauge_livesum_%d.db" % pid, files)
        # a clean stop: each worker forgets itself at worker-exit
        workers = self.workers(u)
        self.assertEqual(u.stop(), 0, u.log_text()[-4000:])
        self.assertEqual(live_gauge_pids(u.metrics) & set(workers), set(), files_of(u.metrics))
        exits = {e["process"]["pid"] for e in u.events("worker-exit")}
        self.assertEqual(exits, set(workers))

    def test_without_the_recipe_dead_workers_gauges_linger(self):
        u = self.start(self.instance(recipe=None))
        made, served, killed = self.kill_and_count(u)
        requests, observed, alive_gauge = self.counts(u)
        print("\n  no recipe: %d requests, %d workers killed; scraped: counter %g, histogram "
              "count %g, workers alive %g (%d alive)"
              % (made, len(killed), requests, observed, alive_gauge, WORKERS))
        # counters need no help; the live gauge does
        self.assertEqual(requests, made)
        self.assertEqual(observed, made)
        self.assertEqual(alive_gauge, WORKERS + len(killed))
        self.assertTrue(set(killed) <= live_gauge_pids(u.metrics))
        self.assertNotIn("recipe:prometheus", u.log_text())

    def test_reload_keeps_counts(self):
        """A graceful reload (SIGHUP: the master execs itself, generation 1)
        is no fresh start: the counts stay; the old workers forget
        themselves at worker-exit."""
        u = self.start(self.instance())
        served = {}
        self.request(u, 15, served)
        old = set(self.workers(u))
        u.send_signal(signal.SIGHUP)
        wait_for(lambda: len(u.events("master-start")) >= 2, what="master-start after reload")
        wait_for(lambda: len(u.events("worker-ready")) >= 2 * WORKERS,
                 what="workers after reload")
        self.assertEqual([e["generation"] for e in u.events("master-start")], [0, 1])
        self.assertFalse(set(self.workers(u)) & old)
        self.request(u, 5, served)
        counts = self.counts(u)
        print("\n  reload: 15 + 5 requests; scraped %s" % (counts,))
        self.assertEqual(counts, (20, 20, WORKERS))
        self.assertFalse(live_gauge_pids(u.metrics) & old)
        self.assertNotIn("removed", u.log_text())

    def test_one_directive_in_uwsgi_section(self):
        """forksafe-subscribe in [uwsgi] instead of [forksafe]: the same."""
        u = self.instance(recipe=None, env_line=MULTIPROC_ENV +
                          "forksafe-subscribe = child-death recipe:prometheus\n")
        self.start(u)
        served, killed = {}, []
        self.request(u, 12, served)
        self.kill_workers(u, self.choose(u, served, {}, 2), killed)
        self.request(u, 8, served)
        self.assertEqual(self.counts(u), (20, 20, WORKERS))
        self.assertFalse(live_gauge_pids(u.metrics) & set(killed))


class FreshStartTest(PrometheusCase):

    def stale_run(self, u):
        """What an earlier run left: a process that counted STALE requests,
        was a live worker, and is gone."""
        pid = self.run_app_script(u.metrics, "stale", str(STALE))
        self.assertTrue(wait_exited(pid))
        self.assertEqual(sorted(files_of(u.metrics)),
                         ["counter_%d.db" % pid, "gauge_livesum_%d.db" % pid,
                          "histogram_%d.db" % pid])
        return pid

    def test_fresh_start_wipes_an_earlier_run(self):
        u = self.instance()
        stale = self.stale_run(u)
        self.start(u)
        self.assertLogHas(u, "[forksafe] recipe:prometheus: a fresh start: removed 3 file(s) of "
                             "an earlier run from %s" % u.metrics)
        self.assertNotIn(stale, set(files_of(u.metrics).values()))
        served = {}
        self.request(u, 10, served)
        counts = self.counts(u)
        print("\n  wipe: stale count %d; 10 requests; scraped %s" % (STALE, counts))
        self.assertEqual(counts, (10, 10, WORKERS))

    def test_wipe_no_keeps_counts_forgets_live_gauges(self):
        u = self.instance(recipe=RECIPE + "?wipe=no")
        stale = self.stale_run(u)
        self.start(u)
        served = {}
        self.request(u, 10, served)
        counts = self.counts(u)
        print("\n  wipe=no: stale count %d; 10 requests; scraped %s" % (STALE, counts))
        self.assertEqual(counts, (STALE + 10, STALE + 10, WORKERS))
        files = files_of(u.metrics)
        self.assertIn("counter_%d.db" % stale, files)
        self.assertNotIn("gauge_livesum_%d.db" % stale, files)
        self.assertLogHas(u, "[forksafe] recipe:prometheus: %s holds 2 file(s) of an earlier run "
                             "(wipe=no: kept; their counters add to this run's); removed 1 live "
                             "gauge file(s) of processes that are gone" % u.metrics)

    def test_running_process_files_are_not_removed(self):
        """A process that still has its files mapped (another master's
        workers on the same directory, e.g. while gunicorn's USR2 hands
        over) keeps them, and its counts; a stale run's go."""
        u = self.instance()
        stale = self.stale_run(u)
        holder, _ = self.hold(u.metrics, HELD)
        self.start(u)
        served = {}
        self.request(u, 10, served)
        counts = self.counts(u)
        print("\n  a live process's files (count %d) kept: 10 requests; scraped %s"
              % (HELD, counts))
        # the holder counts as alive: it is
        self.assertEqual(counts, (HELD + 10, HELD + 10, WORKERS + 1))
        pids = set(files_of(u.metrics).values())
        self.assertIn(holder, pids)
        self.assertNotIn(stale, pids)
        self.assertLogHas(u, "[forksafe] recipe:prometheus: a fresh start: removed 3 file(s) of "
                             "an earlier run from %s" % u.metrics)


class StartupErrorTest(PrometheusCase):
    """Each mistake stops uWSGI before any fork, non-zero, with one
    `[forksafe] FILE:LINE: ...` naming the recipe's line."""

    def instance(self, **kwargs):
        return PrometheusCase.instance(self, forksafe=ERROR_FORKSAFE, **kwargs)

    def refuse(self, u, expect, marker="recipe:"):
        logf = open(u.log, "ab")
        try:
            u.proc = subprocess.Popen([UWSGI, "--ini", u.ini], stdout=logf,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      cwd=u.dir, env=clean_env(), start_new_session=True)
        finally:
            logf.close()
        self.addCleanup(u.kill)
        try:
            status = u.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError("uWSGI did not exit:\n" + u.log_text()[-3000:]) from None
        log = u.log_text()
        self.assertNotEqual(status, 0, log[-3000:])
        self.assertNotIn("spawned uWSGI worker", log)
        self.assertEqual(u.events(), [], "the recorder got events")
        self.assertFalse(os.path.exists(os.path.join(u.dir, "forked")), "a post-fork ran")
        errors = [line for line in log.splitlines() if line.startswith("[forksafe] ")]
        self.assertTrue(errors, log[-3000:])
        with open(u.ini) as f:
            line = [i + 1 for i, text in enumerate(f.read().split("\n")) if marker in text][0]
        self.assertTrue(errors[-1].startswith("[forksafe] %s:%d: " % (u.ini, line)),
                        "expected %s:%d, got %r" % (u.ini, line, errors[-1]))
        self.assertRegex(errors[-1], expect)
        print("\n  %s" % errors[-1][:300])
        return errors[-1]

    def test_variable_not_set(self):
        u = self.instance(env_line="")
        self.refuse(u, r"recipe:prometheus: PROMETHEUS_MULTIPROC_DIR is not set, so "
                       r"prometheus_client is not in multiprocess mode")

    def test_missing_directory(self):
        u = self.instance(make_dir=False)
        self.refuse(u, r"recipe:prometheus: PROMETHEUS_MULTIPROC_DIR=%s is not a directory"
                    % re.escape(u.metrics))

    def test_foreign_file_is_refused_and_left(self):
        u = self.instance()
        foreign = os.path.join(u.metrics, "notes.txt")
        with open(foreign, "w") as f:
            f.write("mine\n")
        stale = self.run_app_script(u.metrics, "stale", str(STALE))
        before = sorted(os.listdir(u.metrics))
        self.refuse(u, r"recipe:prometheus: PROMETHEUS_MULTIPROC_DIR=%s holds files "
                       r"prometheus_client did not write \(notes\.txt\)" % re.escape(u.metrics))
        self.assertEqual(sorted(os.listdir(u.metrics)), before)
        self.assertIn("counter_%d.db" % stale, before)
        with open(foreign) as f:
            self.assertEqual(f.read(), "mine\n")

    def test_unknown_option(self):
        u = self.instance(recipe=RECIPE + "?x=1")
        self.refuse(u, r"recipe:prometheus has no option x= \(its options: wipe=\)")

    def test_bad_option_value(self):
        u = self.instance(recipe=RECIPE + "?wipe=maybe")
        self.refuse(u, r"recipe:prometheus: wipe=maybe is not one of yes, no")

    def test_unknown_recipe(self):
        u = self.instance(recipe="child-death = recipe:prometheus-client")
        self.refuse(u, r"unknown recipe 'prometheus-client'; the recipes are auto, gc-freeze, "
                       r"prometheus, sqlalchemy")


# ------------------------------------------------------------------ gunicorn

GUNICORN_INI = """
[app:main]
use = call:prometheus_gapp:main
forksafe.event_log = %(here)s/native.jsonl

[forksafe]
* = dl:{event_log}:record
post-fork = python:prometheus_app:worker_alive
"""

GUNICORN_GAPP = '''
import prometheus_app


def main(global_config, **settings):
    return prometheus_app.application
'''

GUNICORN_CONF = '''
from forksafe.gunicorn import *  # noqa: F401,F403
preload_app = True
'''


def new_master_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (FileNotFoundError, ValueError):
        return None


class GunicornTest(IntegrationCase):
    """The same counting under gunicorn (forksafe.gunicorn's hooks, the same
    [forksafe] section and recipe line in the --paste file)."""

    @classmethod
    def setUpClass(cls):
        import test_gunicorn

        test_gunicorn.setUpModule()
        cls.Gunicorn = test_gunicorn.Gunicorn

    def serve(self, recipe=True):
        ini = GUNICORN_INI + (RECIPE + "\n" if recipe else "")
        g = self.Gunicorn(self, GUNICORN_CONF, ini=ini, workers=WORKERS,
                          extra_files={"prometheus_gapp.py": GUNICORN_GAPP})
        g.metrics = os.path.join(g.dir, "metrics")
        os.mkdir(g.metrics)
        base = g.env()

        def env():
            e = {k: v for k, v in base.items()
                 if k not in ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")}
            e["PYTHONPATH"] = os.pathsep.join([e["PYTHONPATH"], APP_DIR])
            e["PROMETHEUS_MULTIPROC_DIR"] = g.metrics
            return e
        g.env = env
        g.start()
        self.addCleanup(g.stop)
        return g

    def scrape(self, g):
        import urllib.request

        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % g.port, timeout=30) as r:
            s = parse_metrics(r.read().decode())
        return (s[("app_requests_total", "")], s[("app_request_seconds_count", "")],
                s[("app_workers_alive", "")])

    def run_scenario(self, g):
        served, killed = {}, []

        def request(n):
            for _ in range(n):
                pid = g.get("/")
                served[pid] = served.get(pid, 0) + 1

        def kill(count):
            live = sorted(p for p in children(g.master_pid) if running(p))
            victims = sorted(live, key=lambda p: -served.get(p, 0))[:count]
            self.assertTrue(served.get(victims[0]), (served, live))
            for pid in victims:
                os.kill(pid, signal.SIGKILL)
            killed.extend(victims)
            deaths = g.wait_events("child-death", len(killed))
            self.assertEqual({e["child"]["pid"] for e in deaths}, set(killed))
            g.wait_events("worker-ready", WORKERS + len(killed))

        request(30)
        kill(2)
        request(20)
        kill(1)
        request(10)
        live = sorted(p for p in children(g.master_pid) if running(p))
        self.assertEqual(len(live), WORKERS)
        return 60, served, killed, live

    def test_counts_under_gunicorn(self):
        g = self.serve()
        made, served, killed, live = self.run_scenario(g)
        counts = self.scrape(g)
        print("\n  gunicorn, recipe: %d requests (%d by the %d killed); scraped %s"
              % (made, sum(served.get(p, 0) for p in killed), len(killed), counts))
        self.assertEqual(counts, (made, made, WORKERS))
        self.assertEqual(live_gauge_pids(g.metrics) - {g.master_pid}, set(live))
        self.assertEqual(g.stop(), 0, g.log_text()[-4000:])
        self.assertEqual(live_gauge_pids(g.metrics) - {g.master_pid}, set())

    def test_without_the_recipe_under_gunicorn(self):
        g = self.serve(recipe=False)
        made, served, killed, live = self.run_scenario(g)
        counts = self.scrape(g)
        print("\n  gunicorn, no recipe: %d requests, %d killed; scraped %s"
              % (made, len(killed), counts))
        self.assertEqual(counts, (made, made, WORKERS + len(killed)))

    def test_usr2_upgrade_keeps_the_old_workers_counts(self):
        """gunicorn's USR2: a new master (a fresh start, generation 0) runs
        beside the old one on the same directory.  Its wipe must leave the
        files the old master's workers still have mapped; once the old
        master has stopped (SIGTERM: its workers exit, forgetting their
        live gauges), the scrape has every request."""
        g = self.serve()
        old_master = g.master_pid
        old_workers = set(p for p in children(old_master) if running(p))
        served = {}
        for _ in range(20):
            pid = g.get("/")
            served[pid] = served.get(pid, 0) + 1
        os.kill(old_master, signal.SIGUSR2)

        try:
            # gunicorn: the new master's pidfile is PIDFILE.2 until the old
            # master has gone
            new = wait_for(lambda: new_master_pid(g.pidfile + ".2"),
                           what="the new master's pidfile")
        except AssertionError as e:
            raise AssertionError("%s\n%s" % (e, g.log_text()[-6000:])) from None

        def new_master_stop():
            if running(new):
                os.kill(new, signal.SIGTERM)
                wait_exited(new, timeout=60)
        self.addCleanup(new_master_stop)
        g.wait_events("master-start", 2)
        g.wait_events("worker-ready", 2 * WORKERS)
        self.assertEqual(g.stop(), 0, g.log_text()[-4000:])  # the old master
        self.assertTrue(all(wait_exited(p) for p in old_workers))
        # the new master is promoted: its pidfile takes the configured name
        wait_for(lambda: new_master_pid(g.pidfile) == new, what="the promoted master's pidfile")
        new_workers = set(p for p in children(new) if running(p))
        self.assertEqual(len(new_workers), WORKERS)
        for _ in range(10):
            pid = g.get("/")
            self.assertIn(pid, new_workers)
        counts = self.scrape(g)
        print("\n  gunicorn USR2: 20 requests to the old workers, 10 to the new; scraped %s"
              % (counts,))
        self.assertEqual(counts, (30, 30, WORKERS))
        self.assertEqual(live_gauge_pids(g.metrics) & old_workers, set())
