"""The fork-hazard options of the gunicorn and Celery adapters over the real
core (build/libforksafe.so through forksafe.host): the words and rules from
gunicorn's config file, configure() and install() reach the Host, a bad one
stops the start, the servers' own connections and threads are allowed, and
what "fail" does before the first fork and once children run -- with a
real thread in this process as the hazard, and for Celery a real billiard
pool whose child, forked after the refusal, exits at once.  Real servers
are tests/integration/test_gunicorn_hazards.py's and
test_celery_hazards.py's."""
import atexit
import io
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import types
import unittest
from contextlib import redirect_stderr
from unittest import mock

from forksafe_support import run_in_own_group
from test_gunicorn import AdapterCase, App, Capture, FakeArbiter

from forksafe import _celery_main
from forksafe import _celery_own
from forksafe import _gunicorn
from forksafe import adapter as fs_adapter
from forksafe import celery as fs_celery
from forksafe import gunicorn
from forksafe import host as fs_host


def start_thread(testcase, name="metrics-exporter"):
    """A thread of that name, running until the test ends: a hazard."""
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name=name, daemon=True)
    thread.start()
    testcase.addCleanup(gone, thread)
    testcase.addCleanup(stop.set)
    return thread


def gone(thread):
    """Joins THREAD and waits until the kernel has no such thread either:
    join() returns once Python is done with it, a moment before its OS
    thread exits, and the next test's fork would see it."""
    thread.join()
    task = "/proc/self/task/%d" % thread.native_id
    deadline = time.monotonic() + 30
    while os.path.exists(task) and time.monotonic() < deadline:
        time.sleep(0.001)


def listener(testcase):
    sock = socket.socket()
    testcase.addCleanup(sock.close)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock.getsockname()[1]


def connect(testcase, port):
    """A connection of this process to 127.0.0.1:PORT: a hazard."""
    sock = socket.create_connection(("127.0.0.1", port))
    testcase.addCleanup(sock.close)
    return sock


# ------------------------------------------------------------- shared


class TestSharedHelpers(unittest.TestCase):

    def test_rules_as_given(self):
        self.assertEqual(fs_adapter.allow_rules(None, "f", "o"), [])
        self.assertEqual(fs_adapter.allow_rules("tcp:*:5432\n\n thread:x \n", "f", "o"),
                         ["tcp:*:5432", "thread:x"])
        self.assertEqual(fs_adapter.allow_rules(("unix:*.sock", "thread:a\nthread:b"), "f", "o"),
                         ["unix:*.sock", "thread:a", "thread:b"])
        with self.assertRaisesRegex(fs_host.ForksafeError,
                                    r"^f: o takes rules like 'tcp:\*:5432' .*not 5432$"):
            fs_adapter.allow_rules([5432], "f", "o")
        self.assertEqual(fs_adapter.hazard_mode("fail", "f", "o"), "fail")
        self.assertIsNone(fs_adapter.hazard_mode(None, "f", "o"))
        with self.assertRaisesRegex(fs_host.ForksafeError,
                                    r"^f: o must be warn, fail or off, not 'warm'$"):
            fs_adapter.hazard_mode("warm", "f", "o")

    def test_peer_rules_and_the_core_accepts_them(self):
        rules = [fs_adapter.peer_rules("127.0.0.1", 6379), fs_adapter.peer_rules("[::1]", 6379),
                 fs_adapter.peer_rules("redis.internal", 6379),
                 fs_adapter.peer_rules(path="/run/x[1]*.sock"), fs_adapter.peer_rules(None, 1)]
        self.assertEqual(rules, [["tcp:127.0.0.1:6379"], ["tcp:::1:6379"], ["tcp:*:6379"],
                                 ["unix:/run/x[[]1][*].sock"], []])
        fs_host.Host("celery", hazard_allow=sum(rules, [])).close()

    def test_celerys_broker_and_backend_urls(self):
        from celery import Celery

        app = Celery("unit-urls", broker="redis://127.0.0.1:6390/0;redis://broker2:6391/0",
                     backend="db+postgresql://u:p@10.0.0.9/results")
        app.conf.broker_read_url = "redis+socket:///run/redis.sock"
        rules = _celery_own.own_rules(app)
        self.assertEqual(rules[len(rules) - 4:], ["tcp:127.0.0.1:6390", "tcp:*:6391",
                                                  "unix:/run/redis.sock", "tcp:10.0.0.9:5432"])
        self.assertIn("thread:billiard-supervisor", rules)
        self.assertIn("thread:Timer-[0-9]*", rules)
        # Celery's default broker: amqp on localhost
        self.assertEqual(_celery_own.own_rules(Celery("unit-default"))[-1], "tcp:*:5672")
        fs_host.Host("celery", hazard_allow=rules).close()


# ------------------------------------------------------------- gunicorn


class TestGunicornOptions(AdapterCase):

    def config(self, **names):
        module = types.ModuleType("__config__")
        module.__file__ = "/srv/app/gunicorn.conf.py"
        vars(module).update(names)
        sys.modules["__config__"] = module

    def started(self):
        self.capture = Capture(self)
        gunicorn.configure(subscriptions=["pre-fork python:_fs_capture:record"])
        server = FakeArbiter(App(None, loader=self.not_loaded))
        with redirect_stderr(io.StringIO()):
            gunicorn.on_starting(server)
        return server

    def test_config_file_words_reach_the_host(self):
        self.config(forksafe_hazards="fail", forksafe_hazard_allow=["thread:metrics-*"])
        options = gunicorn.read_options(types.SimpleNamespace(app=App(None), cfg=App(None).cfg))
        self.assertEqual((options["hazards"], options["hazard_allow"]),
                         ("fail", ["thread:metrics-*"]))
        server = self.started()
        self.assertEqual(gunicorn._state.host.hazards, "fail")
        thread = start_thread(self)
        server.spawn_worker()  # allowed: no refusal
        self.assertEqual(gunicorn._state.host.hazards_found(), 0)
        self.assertEqual(self.capture.payloads[-1]["hazards"], [
            {"kind": "thread", "tid": thread.native_id, "name": "metrics-exporter",
             "allowed": True}])

    def test_configure_takes_either_name(self):
        gunicorn.configure(hazards="off", forksafe_hazard_allow="tcp:*:1\ntcp:*:2")
        options = gunicorn.read_options(types.SimpleNamespace(app=App(None), cfg=App(None).cfg))
        self.assertEqual((options["hazards"], options["hazard_allow"]), ("off", "tcp:*:1\ntcp:*:2"))
        self.started()
        self.assertEqual(gunicorn._state.host.hazards, "off")

    def test_a_bad_word_or_rule_stops_the_start(self):
        for names, message in (
                (dict(forksafe_hazards="warm"),
                 "/srv/app/gunicorn.conf.py: forksafe_hazards must be warn, fail or off, "
                 "not 'warm'"),
                (dict(forksafe_hazard_allow=["tcp:5432"]),
                 '/srv/app/gunicorn.conf.py (forksafe_subscribe): forksafe-hazard-allow '
                 '"tcp:5432": a tcp rule needs HOST:PORT'),
                (dict(forksafe_hazard_allow=5432),
                 "/srv/app/gunicorn.conf.py: forksafe_hazard_allow takes rules")):
            with self.subTest(names=names):
                gunicorn._reset_for_tests()
                self.config(**names)
                server = FakeArbiter(App(None, loader=self.not_loaded))
                with mock.patch.object(gunicorn, "_say") as say:
                    with self.assertRaises(SystemExit) as caught:
                        gunicorn.on_starting(server)
                self.assertEqual(caught.exception.code, 1)
                self.assertTrue(say.call_args.args[0].startswith(message), say.call_args)

    def test_gunicorns_syslog_connection_is_its_own(self):
        def cfg(address, on=True):
            return types.SimpleNamespace(syslog=on, syslog_addr=address)

        own = _gunicorn.own_rules
        self.assertEqual(own(cfg("tcp://10.1.1.1:601")), ["tcp:10.1.1.1:601"])
        self.assertEqual(own(cfg("tcp://logs.internal:601")), ["tcp:*:601"])
        self.assertEqual(own(cfg("unix:///dev/log")), ["unix:/dev/log"])
        self.assertEqual(own(cfg("unix:///dev/log#dgram")), [])
        self.assertEqual(own(cfg("udp://localhost:514")), [])
        self.assertEqual(own(cfg("tcp://10.1.1.1:601", on=False)), [])

    def test_fail_before_the_first_worker_halts_gunicorn(self):
        from gunicorn.errors import HaltServer

        gunicorn.configure(hazards="fail")
        server = self.started()
        start_thread(self)
        with mock.patch.object(_gunicorn, "_say") as say, redirect_stderr(io.StringIO()) as err:
            with self.assertRaises(HaltServer) as caught:
                server.spawn_worker()
        self.assertEqual((caught.exception.exit_status, caught.exception.reason),
                         (1, "forksafe-hazards = fail"))
        say.assert_called_once_with("forksafe-hazards = fail: the arbiter refuses to fork with "
                                    "1 hazard (above); exiting")
        self.assertIn("worker 1 is forked while thread 'metrics-exporter'", err.getvalue())
        self.assertEqual(server.WORKERS, {})
        with self.assertRaises(SystemExit):
            gunicorn.on_exit(server)  # status 1, after master-exit

    def test_fail_with_workers_running_stops_gunicorn_and_the_worker_exits(self):
        gunicorn.configure(hazards="fail")
        server = self.started()
        server.spawn_worker()  # nothing to refuse yet
        start_thread(self)
        with mock.patch.object(_gunicorn.os, "kill") as kill, \
                mock.patch.object(_gunicorn, "_say") as say, redirect_stderr(io.StringIO()) as err:
            pid = server.spawn_worker()
            server.spawn_worker()
        kill.assert_called_once_with(os.getpid(), signal.SIGINT)
        say.assert_called_once_with("forksafe-hazards = fail: 1 hazard appeared (above); "
                                    "stopping gunicorn")
        self.assertIn("worker 2 is forked while thread 'metrics-exporter'", err.getvalue())
        # in the worker forked then: it exits before anything runs
        gunicorn._state.master_pid = -1
        with mock.patch.object(_gunicorn.os, "_exit", side_effect=SystemExit) as exit_, \
                mock.patch.object(_gunicorn, "_say") as say:
            with self.assertRaises(SystemExit):
                gunicorn.post_fork(server, server.WORKERS[pid])
        exit_.assert_called_once_with(1)
        say.assert_called_once_with("worker 2 (pid %d) forked with fork hazards exits "
                                    "(forksafe-hazards = fail)" % os.getpid())
        self.assertNotIn("post-fork", self.capture.names)

    def not_loaded(self):
        raise AssertionError("the application was loaded")


# ------------------------------------------------------------- Celery


class CeleryCase(unittest.TestCase):

    def adapter(self, app=None, **kwargs):
        adapter = fs_celery.Adapter(app, None, **kwargs)
        self.addCleanup(atexit.unregister, adapter._at_exit)
        with redirect_stderr(io.StringIO()):  # "no settings"
            adapter.start()
        self.addCleanup(lambda: adapter.host and adapter.host.close())
        return adapter


class TestCeleryOptions(CeleryCase):

    def test_install_passes_the_words_to_the_host(self):
        from celery import Celery

        port = listener(self)
        app = Celery("unit-hazards", broker="redis://127.0.0.1:%d/0" % port)
        adapter = fs_celery.install(app, hazards="fail", hazard_allow=["tcp:*:5432"])
        self.assertEqual((adapter.hazards, adapter.hazard_allow), ("fail", ["tcp:*:5432"]))
        self.addCleanup(atexit.unregister, adapter._at_exit)
        with redirect_stderr(io.StringIO()):
            adapter.start()
        self.addCleanup(adapter.host.close)
        self.assertEqual(adapter.host.hazards, "fail")
        # the broker's connection is Celery's own; another one is not
        connect(self, port)
        child = {"kind": "worker", "id": 1}
        adapter.fire("pre-fork", child=child)
        self.assertEqual(adapter.host.hazards_found(), 0)
        connect(self, listener(self))
        with redirect_stderr(io.StringIO()) as err:
            adapter.fire("pre-fork", child=child)
        self.assertEqual(adapter.host.hazards_found(), 1)
        self.assertEqual(err.getvalue().count("will inherit"), 1, err.getvalue())

    def test_a_bad_word_or_rule_stops_the_worker(self):
        for kwargs, message in ((dict(hazards="warm"), "install(): hazards must be warn, fail "
                                 "or off, not 'warm'"),
                                (dict(hazard_allow=["tcp:x"]), 'forksafe-hazard-allow "tcp:x"'),
                                (dict(hazard_allow=[1]), "install(): hazard_allow takes rules")):
            with self.subTest(kwargs=kwargs):
                adapter = fs_celery.Adapter(None, None, **kwargs)
                self.addCleanup(atexit.unregister, adapter._at_exit)
                with redirect_stderr(io.StringIO()) as err, self.assertRaises(SystemExit) as c:
                    adapter.start()
                self.assertEqual(c.exception.code, 1)
                self.assertIn(message, err.getvalue())

    def test_fail_before_any_pool_process_exits(self):
        adapter = self.adapter(hazards="fail")
        start_thread(self)
        with redirect_stderr(io.StringIO()) as err, self.assertRaises(SystemExit) as caught:
            adapter.pre_fork(object(), 0)
        self.assertEqual(caught.exception.code, 1)
        self.assertIn("[forksafe] worker 1 is forked while thread 'metrics-exporter'",
                      err.getvalue())
        self.assertIn("[forksafe] forksafe-hazards = fail: the worker refuses to fork pool "
                      "process 1 with 1 hazard (above); exiting", err.getvalue())
        # the stop that follows: master-exit, then status 1
        adapter.worker = types.SimpleNamespace(exitcode=0)
        with self.assertRaises(SystemExit):
            adapter.finish()
        self.assertEqual(adapter.worker.exitcode, 1)

    def test_fail_with_pool_processes_stops_the_worker_once(self):
        adapter = self.adapter(hazards="fail")
        adapter.children[4242] = object()
        start_thread(self)
        with redirect_stderr(io.StringIO()) as err, \
                mock.patch.object(_celery_main.os, "kill") as kill:
            adapter.pre_fork(object(), 1)
            adapter.pre_fork(object(), 1)
        kill.assert_called_once_with(os.getpid(), signal.SIGTERM)
        self.assertEqual(err.getvalue().count("1 hazard appeared (above); stopping the worker"),
                         1)
        self.assertTrue(adapter.hazard_refused)

    def test_warn_forks_on(self):
        adapter = self.adapter()
        start_thread(self)
        with redirect_stderr(io.StringIO()) as err:
            adapter.pre_fork(object(), 0)
        self.assertIn("is forked while thread 'metrics-exporter'", err.getvalue())
        self.assertFalse(adapter.hazard_refused)


#: the bound on the forked billiard pool run (returns as soon as it is done).
POOL_BOUND = 120


class TestCeleryPoolChild(unittest.TestCase):
    """A real billiard pool (the threaded one, whose supervisor thread forks
    the respawns) with the hooks and a real Host under hazards = "fail": a
    thread starts once the pool runs, the supervisor respawns a child, the
    main process is asked to stop (SIGTERM, recorded here), and each child
    forked from then on exits at once.  The pool runs in a forked process
    of its own group, killed after a bound."""

    def run_pool(self, out):
        from billiard.pool import Pool

        log = os.open(os.path.join(out, "stderr"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(log, 2)
        terms = []
        signal.signal(signal.SIGTERM, lambda *_: terms.append(time.monotonic()))
        record = types.ModuleType("_fs_hazard_rec")

        def append(payload):
            fd = os.open(os.path.join(out, "events.jsonl"),
                         os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            os.write(fd, (json.dumps(payload) + "\n").encode())
            os.close(fd)

        record.append = append
        sys.modules["_fs_hazard_rec"] = record
        adapter = fs_celery.Adapter(None, None, subscriptions=["* python:_fs_hazard_rec:append"],
                                    hazards="fail")
        adapter.start()
        adapter.pool_hooked = True
        cls = fs_celery.hooked_pool_class(Pool, adapter)
        pool = cls(processes=1, initializer=adapter.child_started,
                   on_process_exit=lambda pid, exitcode: adapter.child_exit(exitcode),
                   threads=True, lost_worker_timeout=0.5)
        pool.apply_async(os.getpid).get(timeout=60)
        stop = threading.Event()
        threading.Thread(target=stop.wait, name="metrics-exporter", daemon=True).start()
        pool.apply_async(os._exit, (3,))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (terms and refused_deaths(out)):
            time.sleep(0.05)
        pool.terminate()
        stop.set()
        with open(os.path.join(out, "terms.json"), "w") as f:
            json.dump(len(terms), f)

    def test_a_child_forked_after_the_refusal_exits_at_once(self):
        out = tempfile.mkdtemp(prefix="forksafe-hazard-unit-")
        self.addCleanup(os.system, "rm -rf '%s'" % out)
        _, status = run_in_own_group(lambda: self.run_pool(out), POOL_BOUND)
        with open(os.path.join(out, "stderr")) as f:
            stderr = f.read()
        if status is None:
            self.fail("the billiard pool did not finish in %d s:\n%s" % (POOL_BOUND, stderr))
        self.assertEqual(status, 0, stderr)
        with open(os.path.join(out, "terms.json")) as f:
            self.assertEqual(json.load(f), 1, stderr)  # asked to stop, once
        self.assertIn("[forksafe] worker 1 is forked while thread 'metrics-exporter'", stderr)
        self.assertIn("forksafe-hazards = fail: 1 hazard appeared (above); stopping the worker",
                      stderr)
        deaths = refused_deaths(out)
        self.assertTrue(deaths, stderr)
        events = read_events(out)
        for death in deaths:
            self.assertEqual((death["status"], death["cause"]), (1 << 8, "exit"))
            self.assertIn("[forksafe] worker 1 (pid %d) forked with fork hazards exits "
                          "(forksafe-hazards = fail)" % death["pid"], stderr)
            self.assertEqual([e["event"] for e in events
                              if e["process"]["pid"] == death["pid"]], [])


def read_events(out):
    try:
        with open(os.path.join(out, "events.jsonl")) as f:
            return [json.loads(line) for line in f if line.endswith("\n")]
    except FileNotFoundError:
        return []


def refused_deaths(out):
    """child-death of the children forked after the refusal (respawn > 0)."""
    return [e["child"] for e in read_events(out)
            if e["event"] == "child-death" and e["child"]["respawn"] > 0]


if __name__ == "__main__":
    unittest.main()
