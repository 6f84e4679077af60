"""pyramid_forksafe.containers.celery under a real Celery worker (prefork
pool, concurrency 2) with a real redis-server broker, both started here in a
temp dir on free loopback ports, stopped by the pids we started and always
reaped.  The forksafe core runs through build/libforksafe.so (ctypes).

Events are recorded three ways: the native `event_log` handler (`*` in
[forksafe]) in every process, a `python:` handler and an `exec:` handler in
the pool children, and the subscribers of the Pyramid application of the
same ini (registry="bootstrap")."""

import gc
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

from harness import APP_DIR, RECORDER, ROOT, ServerProcess, free_port, read_jsonl, wait_for

PYTHON = "/usr/bin/python3"
REDIS = "redis-server"
PACKAGE_DIR = os.path.join(ROOT, "python")
# The worker runs from a script, not `python -m celery`: Celery's SIGHUP
# restart re-executes sys.argv, which -m turns into celery/__main__.py.
LAUNCHER = "import sys\nfrom celery.__main__ import main\nsys.exit(main())\n"
WORKER_ARGS = ["-A", "celery_app", "worker", "-P", "prefork", "-c", "2",
               "--without-mingle", "--without-gossip", "--without-heartbeat",
               "-l", "INFO", "-n", "forksafe-test@%h"]
PAYLOAD_KEYS = {"event", "container", "process", "generation", "respawn", "time", "settings",
                "global_settings"}

INI = """
[DEFAULT]
shared = from-default

[app:main]
use = call:pyramid_app:main
label = celery
title = forksafe under celery
forksafe.event_log = %(here)s/native.jsonl
python_log = %(here)s/python.jsonl
pyramid_log = %(here)s/pyramid.jsonl
sqlalchemy.url = postgresql://app:s3cret@db/app
derived = %(shared)s and %(here)s
multi =
    first
    second

[forksafe]
* = dl:{recorder}:record
post-fork = python:handlers:record
worker-exit = python:handlers:record
worker-ready = exec:cat > %(here)s/exec-$FORKSAFE_PID.json
"""


def without_time(payload):
    return {k: v for k, v in payload.items() if k != "time"}


class Redis(object):
    """redis-server on a free loopback port, no persistence, in DIR."""

    def __init__(self, testcase, directory):
        self.port = free_port()
        self.log = os.path.join(directory, "redis.log")
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen(
                [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", directory, "--daemonize", "no"],
                stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=directory, start_new_session=True)
        testcase.addCleanup(self.stop)
        wait_for(self.ping, timeout=10, what="redis-server on port %d" % self.port)

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def ping(self):
        if self.proc.poll() is not None:
            raise AssertionError("redis-server exited: %s" % open(self.log).read())
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


class Worker(ServerProcess):
    """`celery -A celery_app worker` in DIR, in its own session."""

    name = "celery worker"

    def __init__(self, testcase, directory, broker, ini, env=None, args=(),
                 worker_args=WORKER_ARGS):
        self.testcase = testcase
        self.args = list(worker_args) + list(args)
        self.dir = directory
        self.ini = ini
        self.log = os.path.join(directory, "worker.log")
        self.env = dict(os.environ)
        self.env.update({
            "PYTHONPATH": os.pathsep.join(
                [PACKAGE_DIR, APP_DIR] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
            "CELERY_BROKER": broker,
            "FORKSAFE_SETTINGS": ini + "#main",
            "CELERY_APP_PYRAMID": "1",
            "PYTHONUNBUFFERED": "1",
        })
        self.env.pop("FORKSAFE_GENERATION", None)
        self.env.update(env or {})
        self.proc = None

    def start(self):
        launcher = os.path.join(self.dir, "celery-worker.py")
        with open(launcher, "w") as f:
            f.write(LAUNCHER)
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(
                [PYTHON, launcher] + self.args, env=self.env,
                stdout=logf, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=self.dir, start_new_session=True)
        self.testcase.addCleanup(self.kill)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def events(self, name=None):
        events = read_jsonl(os.path.join(self.dir, "native.jsonl"))
        return [e for e in events if name is None or e["event"] == name]

    def wait_events(self, predicate, what, timeout=60):
        def check():
            if self.proc.poll() is not None and not predicate(self.events()):
                raise AssertionError("the worker exited (%s) before %s:\n%s" % (
                    self.proc.returncode, what, self.log_text()[-4000:]))
            return predicate(self.events())
        return wait_for(check, timeout=timeout, what=what)

    def wait_ready(self, count=2):
        return self.wait_events(lambda es: len([e for e in es if e["event"] == "worker-ready"])
                                >= count, "%d worker-ready" % count)

    def wait_generation_ready(self, count=1):
        return self.wait_events(lambda es: len([e for e in es if e["event"] == "generation-ready"])
                                >= count, "%d generation-ready" % count)

    def wait_consumer_ready(self, count=1):
        """Celery's "NAME ready." log line, COUNT times in the log (one per
        start: a SIGHUP restart appends to the same log): the consumer runs
        (a pool child that dies before that makes Celery give up: "Could not
        start worker processes"), and the SIGHUP handler is installed."""
        wait_for(lambda: self.log_text().count(" ready.") >= count
                 or self.proc.poll() is not None,
                 what="the consumer ready (%d)" % count)
        if self.proc.poll() is not None:
            raise AssertionError("the worker exited:\n" + self.log_text()[-4000:])

    def exec_record(self, pid):
        """The payload the exec: handler of worker-ready wrote for PID, once
        `cat` has written all of it; None before."""
        try:
            with open(os.path.join(self.dir, "exec-%d.json" % pid)) as f:
                return json.load(f)
        except (FileNotFoundError, ValueError):
            return None

    def wait_child_recorded(self, pid):
        """Until every handler of PID's worker-ready has run: they run in the
        child in order -- the native dl: (what wait_ready sees), the exec:
        `cat > exec-PID.json`, then the Pyramid subscribers -- so a child
        SIGKILLed or stopped earlier would leave them half done."""
        pyramid = os.path.join(self.dir, "pyramid.jsonl")
        self.wait_events(
            lambda es: self.exec_record(pid) is not None and any(
                r["pid"] == pid and r["payload"]["event"] == "worker-ready"
                for r in read_jsonl(pyramid)),
            "the exec: and Pyramid records of worker-ready in pid %d" % pid)

    def stop(self, timeout=60):
        """Warm shutdown (SIGTERM) by our pid; returns the exit status."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout=60):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("the worker did not exit:\n%s\n%s" % (
                self.diagnose(), self.log_text()[-6000:]))

    def diagnose(self):
        """The worker's processes, and Celery's stack dump (SIGUSR1)."""
        ps = subprocess.run(["ps", "-o", "pid,ppid,stat,wchan:24,args", "-g", str(self.proc.pid)],
                            capture_output=True, text=True).stdout
        try:
            os.kill(self.proc.pid, signal.SIGUSR1)
            time.sleep(1)
        except ProcessLookupError:
            pass
        return ps

def by_pid(events):
    out = {}
    for e in events:
        out.setdefault(e["process"]["pid"], []).append(e)
    return out


class CeleryCase(unittest.TestCase):
    maxDiff = None

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="forksafe-celery-")
        self.addCleanup(subprocess.run, ["rm", "-rf", self.dir], check=False)
        self.redis = Redis(self, self.dir)

    def write_ini(self, forksafe_section=None):
        text = textwrap.dedent(INI).format(recorder=RECORDER)
        if forksafe_section is not None:
            text = text[:text.index("[forksafe]")] + textwrap.dedent(forksafe_section)
        path = os.path.join(self.dir, "production.ini")
        with open(path, "w") as f:
            f.write(text)
        return path

    def worker(self, forksafe_section=None, env=None, args=(), worker_args=WORKER_ARGS):
        ini = self.write_ini(forksafe_section)
        return Worker(self, self.dir, self.redis.url, ini, env, args, worker_args).start()

    def client(self):
        from celery import Celery
        client = Celery("client", broker=self.redis.url, backend=self.redis.url)
        self.addCleanup(client.close)
        return client


class TestLifecycle(CeleryCase):

    def test_every_event_every_handler_kind_and_pyramid(self):
        w = self.worker()
        w.wait_ready(2)
        w.wait_generation_ready(1)
        pool = [e["process"]["pid"] for e in w.events("post-fork")]
        self.assertEqual(len(pool), 2)

        # A task runs in a pool child and returns its pid.
        client = self.client()
        pid = client.send_task("celery_app.getpid").get(timeout=60)
        self.assertIn(pid, pool)

        # A pool child SIGKILLed: child-death in the main process, then a
        # new child in the same slot.
        w.wait_consumer_ready()
        victim = pool[0]
        w.wait_child_recorded(victim)
        os.kill(victim, signal.SIGKILL)
        w.wait_events(lambda es: any(e["event"] == "child-death" for e in es), "child-death")
        w.wait_ready(3)
        for ready in w.events("worker-ready"):  # the other child, the replacement
            if ready["process"]["pid"] != victim:
                w.wait_child_recorded(ready["process"]["pid"])
        # No task after that: with Celery 5.2.6 / billiard 4.1.0, a task run
        # after a pool child was SIGKILLed often makes the warm shutdown
        # wait 30 s or hang (AsynPool's flush of the outqueues), forksafe
        # loaded or not.

        self.assertEqual(w.stop(), 0, w.log_text()[-4000:])
        events = w.events()
        main = w.pid

        # ---- per-process sequences (native handler, every process)
        processes = by_pid(events)
        main_names = [e["event"] for e in processes.pop(main)]
        self.assertEqual(main_names, [
            "master-start",
            "pre-fork", "post-fork-parent", "pre-fork", "post-fork-parent",
            "generation-ready",
            "child-death", "pre-fork", "post-fork-parent",
            "master-exit",
        ], w.log_text()[-3000:])
        self.assertEqual(len(processes), 3)
        for child_pid, child_events in processes.items():
            names = [e["event"] for e in child_events]
            if child_pid == victim:
                self.assertEqual(names, ["post-fork", "worker-ready"])
            else:
                self.assertEqual(names, ["post-fork", "worker-ready", "worker-exit"])
                self.assertEqual(child_events[-1]["reason"], "shutdown")
            for e in child_events:
                self.assertEqual(e["process"]["kind"], "worker")
                self.assertEqual(e["process"]["ppid"], main)

        # ---- payloads
        for e in events:
            keys = set(e)
            expected = set(PAYLOAD_KEYS)
            if e["event"] in ("pre-fork", "post-fork-parent", "child-death"):
                expected.add("child")
            if e["event"] == "pre-fork":
                expected.add("hazards")  # forksafe-hazards is warn by default
            if e["event"] in ("worker-exit", "master-exit"):
                expected.add("reason")
            if e["event"] == "generation-ready":
                expected.update(("workers", "elapsed_ms"))
            self.assertEqual(keys, expected, e)
            self.assertEqual(e["container"], "celery")
            self.assertEqual(e["generation"], 0)
        by_event = {}
        for e in events:
            by_event.setdefault(e["event"], []).append(e)
        self.assertEqual(by_event["master-start"][0]["process"],
                         {"kind": "master", "id": 0, "pid": main, "ppid": os.getpid()})
        self.assertEqual(by_event["master-exit"][0]["reason"], "shutdown")
        # the slots: ids 1 and 2, the respawned one again with respawn 1
        pre = [(e["child"]["id"], e["child"]["respawn"]) for e in by_event["pre-fork"]]
        self.assertEqual(sorted(pre[:2]), [(1, 0), (2, 0)])
        victim_id = next(e["process"]["id"] for e in by_event["post-fork"]
                         if e["process"]["pid"] == victim)
        self.assertEqual(pre[2], (victim_id, 1))
        self.assertNotIn("pid", by_event["pre-fork"][0]["child"])
        parents = {e["child"]["pid"]: e["child"] for e in by_event["post-fork-parent"]}
        self.assertEqual(set(parents), set(processes))
        for e in by_event["post-fork"]:
            child = parents[e["process"]["pid"]]
            self.assertEqual(e["process"]["id"], child["id"])
            self.assertEqual(e["respawn"], child["respawn"])
        death = by_event["child-death"][0]["child"]
        self.assertEqual(death, {"kind": "worker", "id": victim_id, "pid": victim, "respawn": 0,
                                 "status": 9, "signal": 9, "cause": "signal"})

        # ---- settings: exactly PasteDeploy's appconfig
        from paste.deploy import appconfig
        for path in (PACKAGE_DIR, APP_DIR):  # `use = call:pyramid_app:main`
            if path not in sys.path:
                sys.path.insert(0, path)
        conf = appconfig("config:" + w.ini)
        for e in events:
            self.assertEqual(e["settings"], dict(conf.local_conf))
            self.assertEqual(e["global_settings"], dict(conf.global_conf))
        self.assertEqual(events[0]["settings"]["multi"], "\nfirst\nsecond")

        # ---- the python: handler ran in the children, with the same payload
        python = read_jsonl(os.path.join(self.dir, "python.jsonl"))
        native_children = [without_time(e) for e in events
                           if e["event"] in ("post-fork", "worker-exit")]
        def canonical(payloads):
            return sorted(json.dumps(without_time(p), sort_keys=True) for p in payloads)
        self.assertEqual(canonical(python), canonical(native_children))
        self.assertEqual(len(python), 5)  # 3 post-fork, 2 worker-exit

        # ---- the exec: handler ran in each child at worker-ready
        execs = sorted(glob.glob(os.path.join(self.dir, "exec-*.json")))
        self.assertEqual(len(execs), 3)
        for path in execs:
            with open(path) as f:
                payload = json.load(f)
            self.assertEqual(payload["event"], "worker-ready")
            self.assertEqual(path, os.path.join(self.dir, "exec-%d.json"
                                                % payload["process"]["pid"]))
            self.assertIn(payload["process"]["pid"], processes)

        # ---- the Pyramid application's subscribers heard every event
        pyramid = read_jsonl(os.path.join(self.dir, "pyramid.jsonl"))
        self.assertEqual(len(pyramid), len(events))
        pyramid_by_pid = {}
        for record in pyramid:
            pyramid_by_pid.setdefault(record["pid"], []).append(record)
        for process_pid, native in by_pid(events).items():  # in order within each process
            records = pyramid_by_pid.get(process_pid, [])
            self.assertEqual([without_time(r["payload"]) for r in records],
                             [without_time(e) for e in native])
            for record in records:
                self.assertEqual(record["app"], "celery")
                self.assertEqual(record["title"], "forksafe under celery")
        self.assertEqual(pyramid[0]["class"], "ApplicationMasterStart")
        self.assertIn("ApplicationPostWorkerInit", {r["class"] for r in pyramid})

    def test_sighup_restart_is_a_reload_with_the_next_generation(self):
        w = self.worker()
        w.wait_ready(2)
        w.wait_consumer_ready()
        os.kill(w.pid, signal.SIGHUP)  # warm shutdown, then execv of the same command
        w.wait_events(lambda es: len([e for e in es if e["event"] == "master-start"]) == 2
                      and len([e for e in es if e["event"] == "worker-ready"]) == 4,
                      "the restarted worker's children")
        # the restarted consumer runs (its own "ready." line, after the first
        # start's): a SIGTERM before that is a stop during the start-up
        w.wait_consumer_ready(2)
        w.wait_generation_ready(2)
        self.assertEqual(w.stop(), 0, w.log_text()[-3000:])
        ready = w.events("generation-ready")
        self.assertEqual([e["generation"] for e in ready], [0, 1])
        self.assertEqual(sorted(x["pid"] for x in ready[1]["workers"]),
                         sorted(e["process"]["pid"] for e in w.events("worker-ready")
                                if e["generation"] == 1))
        processes = by_pid(w.events())
        main = processes.pop(w.pid)  # execv keeps the pid
        self.assertEqual([(e["event"], e["generation"], e.get("reason")) for e in main
                          if e["event"] in ("master-start", "master-exit")], [
            ("master-start", 0, None), ("master-exit", 0, "reload"),
            ("master-start", 1, None), ("master-exit", 1, "shutdown")])
        ends = sorted((es[-1]["generation"], es[-1]["event"], es[-1]["reason"])
                      for es in processes.values())
        self.assertEqual(ends, [(0, "worker-exit", "reload")] * 2
                         + [(1, "worker-exit", "shutdown")] * 2)
        self.assertNotIn("child-death", [e["event"] for e in main])

    def assert_generation_ready(self, w, event, generation, pids):
        """EVENT, a generation-ready of the main process, lists exactly PIDS ({id: pid})."""
        self.assertEqual(event["process"], {"kind": "master", "id": 0, "pid": w.pid,
                                            "ppid": os.getpid()})
        self.assertEqual(event["generation"], generation)
        self.assertEqual({x["id"]: x["pid"] for x in event["workers"]}, pids)
        self.assertEqual([x["id"] for x in event["workers"]], sorted(pids))
        for x in event["workers"]:
            self.assertEqual(set(x), {"id", "pid", "ms"})
            self.assertTrue(0 <= x["ms"] <= event["elapsed_ms"], event)

    def test_generation_ready(self):
        w = self.worker(env={"CELERY_APP_POOL_RESTARTS": "1"})
        w.wait_generation_ready(1)
        first = w.events("generation-ready")[0]
        ready = {e["process"]["id"]: e["process"]["pid"] for e in w.events("worker-ready")}
        self.assert_generation_ready(w, first, 0, ready)
        # after every listed child's worker-ready handlers, in the record too
        names = [e["event"] for e in w.events()]
        self.assertGreater(names.index("generation-ready"),
                           max(i for i, n in enumerate(names) if n == "worker-ready"))
        # the same payload for the Pyramid subscribers
        pyramid = [r for r in read_jsonl(os.path.join(self.dir, "pyramid.jsonl"))
                   if r["payload"]["event"] == "generation-ready"]
        self.assertEqual(pyramid[0]["class"], "ApplicationGenerationReady")
        self.assertEqual(without_time(pyramid[0]["payload"]), without_time(first))
        # a child killed and respawned: no new generation (its replacement
        # woke the main process, which looked)
        w.wait_consumer_ready()
        for pid in ready.values():
            w.wait_child_recorded(pid)
        os.kill(ready[1], signal.SIGKILL)
        w.wait_ready(3)
        # pool_restart replaces every child under the same main process
        # (each after its next task): generation-ready again, the same
        # generation, every child new
        client = self.client()
        replies = client.control.pool_restart(reply=True, timeout=10)
        self.assertTrue(replies, "no reply to pool_restart")

        def replaced():
            # two naps at once: one in each child, each of which then
            # leaves (billiard restarts a pool process after its task)
            if len(w.events("generation-ready")) >= 2:
                return True
            naps = [client.send_task("celery_app.nap", args=(0.5,)) for _ in range(2)]
            for nap in naps:
                nap.get(timeout=30)
            return False
        wait_for(replaced, what="every child replaced after pool_restart")
        gc.collect()  # the naps' results let go of while the broker is up
        second = w.events("generation-ready")[1]
        alive = {}
        for e in w.events("worker-ready")[3:]:
            alive[e["process"]["id"]] = e["process"]["pid"]
        self.assert_generation_ready(w, second, 0, alive)
        before = set(ready.values()) | {w.events("worker-ready")[2]["process"]["pid"]}
        self.assertTrue(before.isdisjoint(alive.values()))
        self.assertEqual(w.stop(), 0, w.log_text()[-3000:])
        self.assertEqual(len(w.events("generation-ready")), 2)

    def test_max_tasks_per_child_recycles_with_reason(self):
        w = self.worker(args=["--max-tasks-per-child", "1"])
        w.wait_ready(2)
        client = self.client()
        pid = client.send_task("celery_app.getpid").get(timeout=60)
        w.wait_events(lambda es: any(e["event"] == "worker-exit" and e["process"]["pid"] == pid
                                     for e in es), "worker-exit of the recycled child")
        w.wait_ready(3)
        self.assertEqual(w.stop(), 0)
        exits = {e["process"]["pid"]: e["reason"] for e in w.events("worker-exit")}
        self.assertEqual(exits.pop(pid), "max-requests")
        self.assertEqual(set(exits.values()), {"shutdown"})
        self.assertEqual(w.events("child-death"), [])

    def test_a_plain_worker_has_no_fork_hazard(self):
        # Celery's own flags (mingle, gossip, heartbeat: more connections),
        # and pool processes respawned while the consumer is connected: the
        # main process holds the broker's connections then, which are
        # Celery's own (forksafe._celery_own), not the application's.
        w = self.worker(args=["--max-tasks-per-child", "1"],
                        worker_args=[a for a in WORKER_ARGS if not a.startswith("--without")])
        w.wait_ready(2)
        client = self.client()
        for _ in range(3):
            client.send_task("celery_app.getpid").get(timeout=60)
        w.wait_events(lambda es: len([e for e in es if e["event"] == "pre-fork"]) >= 5,
                      "three respawns")
        w.wait_ready(5)
        self.assertEqual(w.stop(), 0, w.log_text()[-3000:])
        log = w.log_text()
        self.assertNotIn("will inherit", log)
        self.assertNotIn("is forked while", log)
        pre_forks = w.events("pre-fork")
        respawns = [e for e in pre_forks if e["child"]["respawn"] > 0]
        self.assertGreaterEqual(len(respawns), 3)
        # found, and allowed: the broker's connections, at the broker's address
        broker = "127.0.0.1:%d" % self.redis.port
        for e in respawns:
            self.assertTrue(e["hazards"], e)
            self.assertEqual({(h["kind"], h["peer"], h["allowed"]) for h in e["hazards"]},
                             {("tcp", broker, True)}, e["hazards"])


class TestPolicyAndErrors(CeleryCase):

    def test_configuration_error_stops_the_worker_before_any_fork(self):
        w = self.worker("[forksafe]\npost_fork = exec:true\n")
        self.assertNotEqual(w.wait(), 0)
        log = w.log_text()
        self.assertIn("[forksafe] %s:" % w.ini, log)
        self.assertIn("unknown event 'post_fork'", log)
        self.assertEqual(w.events(), [])

    def test_on_error_exit_in_a_child_respawns_it(self):
        # Celery gives up on a pool whose first children die at start-up
        # (did_start_ok), so the handler fails only in a replacement child.
        w = self.worker("""
            [forksafe]
            * = dl:{recorder}:record
            post-fork = on-error=exit python:celery_app:fail_on_first_respawn
            """.replace("{recorder}", RECORDER))
        w.wait_ready(2)
        w.wait_generation_ready(1)
        w.wait_consumer_ready()
        victim = w.events("post-fork")[0]["process"]
        os.kill(victim["pid"], signal.SIGKILL)
        # the first replacement fails and exits, the second one is ready
        w.wait_ready(3)
        self.assertEqual(w.stop(), 0, w.log_text()[-3000:])
        processes = by_pid(w.events())
        main = processes.pop(w.pid)
        self.assertEqual([e["event"] for e in main], [
            "master-start",
            "pre-fork", "post-fork-parent", "pre-fork", "post-fork-parent",
            "generation-ready",
            "child-death", "pre-fork", "post-fork-parent",  # the SIGKILL
            "pre-fork", "post-fork-parent",  # no child-death: it completed worker-exit
            "master-exit"])
        self.assertEqual([e["child"]["respawn"] for e in main if e["event"] == "pre-fork"][2:],
                         [1, 2])
        failed = [es for es in processes.values() if es[0]["respawn"] == 1]
        self.assertEqual(len(failed), 1)
        self.assertEqual([(e["event"], e.get("reason")) for e in failed[0]],
                         [("post-fork", None), ("worker-exit", "exit")])
        self.assertEqual(failed[0][0]["process"]["id"], victim["id"])
        log = w.log_text()
        self.assertIn("failing in respawn 1 of worker %d" % victim["id"], log)
        self.assertIn("on-error=exit: worker %d (pid %d) exits after a failed post-fork handler"
                      % (victim["id"], failed[0][0]["process"]["pid"]), log)
        self.assertIn("exited with 'exitcode 1'", log)

    def test_on_error_fatal_in_a_child_stops_the_worker(self):
        w = self.worker("""
            [forksafe]
            * = dl:{recorder}:record
            worker-ready = id=2 on-error=fatal python:handlers:boom
            """.replace("{recorder}", RECORDER))
        self.assertEqual(w.wait(), 0, w.log_text()[-3000:])  # a warm shutdown
        processes = by_pid(w.events())
        main = [e["event"] for e in processes.pop(w.pid)]
        self.assertEqual(main[0], "master-start")
        self.assertEqual(main[-1], "master-exit")
        self.assertNotIn("child-death", main)
        # both children end with the warm shutdown
        self.assertEqual(sorted((es[-1]["event"], es[-1]["reason"], es[-1]["process"]["id"])
                                for es in processes.values()),
                         [("worker-exit", "shutdown", 1), ("worker-exit", "shutdown", 2)])
        log = w.log_text()
        self.assertIn("boom on worker-ready", log)
        self.assertIn("on-error=fatal: stopping the worker after a failed worker-ready", log)


    def test_a_failed_master_exit_handler_makes_the_exit_status_1(self):
        w = self.worker("""
            [forksafe]
            * = dl:{recorder}:record
            master-exit = on-error=fatal python:handlers:boom
            """.replace("{recorder}", RECORDER))
        w.wait_ready(2)
        status = w.stop()
        log = w.log_text()
        self.assertEqual(status, 1, log[-3000:])
        self.assertIn("boom on master-exit", log)
        self.assertIn("on-error=fatal: the worker exits with status 1 after a failed "
                      "master-exit handler", log)


if __name__ == "__main__":
    unittest.main()
