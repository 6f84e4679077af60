"""forksafe under a real uWSGI Emperor (`uwsgi --emperor DIR`).

Each vassal is a full forksafe instance of its own: its ini has [uwsgi]
(master, 2 workers, its own port, `paste = config:%p`), its own [app:main]
settings (a vassal name, a database URL with a secret, its own event log
files) and a [forksafe] section subscribing every event to the native
event_log handler and to a python: handler.  The tests check that every
event a vassal records carries exactly that vassal's settings (PasteDeploy's
appconfig of its file) and comes from that vassal's master or its children,
never the other's -- through the whole life, a reload of one vassal (its
file edited), the removal of one vassal, a vassal refused for a bad
forksafe config, and the Emperor's own shutdown.

The Emperor runs in a session of its own; its vassals and their workers
stay in its process group (uWSGI does not setsid them), so the cleanup's
SIGKILL to that group reaps everything even when a test fails.  It is
stopped with SIGINT to its pid: it writes "stop" to every vassal's emperor
pipe, each vassal master runs kill_them_all() and exits, and the Emperor
exits once all are reaped.
"""

import os
import signal
import subprocess
import sys
import tempfile
import urllib.request

from harness import APP_DIR, PLUGIN_DIR, RECORDER, UWSGI, IntegrationCase, ServerProcess, \
    free_port, read_jsonl, wait_for

sys.path.insert(0, APP_DIR)  # simple_app, for PasteDeploy's appconfig (use = call:...)

START_TIMEOUT = 40  # two vassals load Python side by side on a small machine
LIFECYCLE = ["master-start", "pre-fork", "post-fork-parent", "pre-fork", "post-fork-parent"]

VASSAL = """\
[uwsgi]
plugin-dir = {plugin_dir}
plugins = python3,forksafe
master = true
processes = 2
http-socket = 127.0.0.1:{port}
pythonpath = {app_dir}
paste = config:%p

[app:main]
use = call:simple_app:make_app
vassal = {name}
release = {release}
sqlalchemy.url = postgresql://{name}:secret-of-{name}@127.0.0.1/{name}_db
forksafe.event_log = {record}
python_log = {python_log}

[forksafe]
{subscription} =
    dl:{recorder}:record
    python:handlers:record
"""


def alive(pid):
    """True while the process exists, zombie included (not reaped yet)."""
    return os.path.exists("/proc/%d" % pid)


def parent_of(pid):
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


class Vassal:
    """One vassal's ini in the Emperor's directory, and its event logs."""

    def __init__(self, emperor, name, subscription="*"):
        self.name = name
        self.subscription = subscription
        self.port = free_port()
        self.ini = os.path.join(emperor.vassals, name + ".ini")
        self.record = os.path.join(emperor.dir, name + ".native.jsonl")
        self.python_log = os.path.join(emperor.dir, name + ".python.jsonl")
        self.release = 1

    def write(self):
        text = VASSAL.format(plugin_dir=PLUGIN_DIR, port=self.port, app_dir=APP_DIR,
                             name=self.name, release=self.release, record=self.record,
                             python_log=self.python_log, subscription=self.subscription,
                             recorder=RECORDER)
        # Write aside and rename, so the Emperor never scans a half-written file.
        with open(self.ini + ".tmp", "w") as f:
            f.write(text)
        os.rename(self.ini + ".tmp", self.ini)
        self.conf = self.appconfig()

    def edit(self):
        """A new release in the same file; the mtime moves on by 2 s, as the
        Emperor compares whole seconds."""
        before = os.stat(self.ini).st_mtime
        self.release += 1
        self.write()
        os.utime(self.ini, (before + 2, before + 2))

    def events(self, name=None, generation=None):
        out = read_jsonl(self.record)
        if name:
            out = [e for e in out if e["event"] == name]
        if generation is not None:
            out = [e for e in out if e["generation"] == generation]
        return out

    def python_events(self):
        return read_jsonl(self.python_log)

    def ready(self, generation=0):
        """The whole start of GENERATION is on record: the master's
        post-fork-parent for both workers (the last one is dispatched at the
        master's next cycle, possibly after that worker's worker-ready) and
        both workers' worker-ready -- in the native record and, as the
        python: handler writes each event after the native one, in the
        python log too."""
        def counts(events):
            mine = [e for e in events if e["generation"] == generation]
            return (len([e for e in mine if e["event"] == "post-fork-parent"]),
                    len([e for e in mine if e["event"] == "worker-ready"]))

        def complete(c):
            return c[0] >= 2 and c[1] >= 2

        return complete(counts(self.events())) and complete(counts(self.python_events()))

    def master_pid(self):
        return self.events("master-start")[0]["process"]["pid"]

    def get(self, path="/", timeout=30):
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.port, path),
                                    timeout=timeout) as r:
            return r.read().decode()

    def appconfig(self):
        """(settings, global settings) as PasteDeploy reads the file now."""
        from paste.deploy import appconfig
        conf = appconfig("config:" + self.ini)
        return dict(conf.local_conf), dict(conf.global_conf)


class Emperor(ServerProcess):
    name = "uWSGI Emperor"
    stop_signal = signal.SIGINT

    def __init__(self, testcase, *args):
        self.testcase = testcase
        self.args = args
        self.dir = tempfile.mkdtemp(prefix="forksafe-emperor-")
        testcase.addCleanup(subprocess.run, ["rm", "-rf", self.dir], check=False)
        self.vassals = os.path.join(self.dir, "vassals")
        os.mkdir(self.vassals)
        self.log = os.path.join(self.dir, "emperor.log")

    def vassal(self, name, **kwargs):
        v = Vassal(self, name, **kwargs)
        v.write()
        return v

    def start(self):
        with open(self.log, "ab") as logf:
            # --emperor-freq 1: scan the directory every second (default 3).
            self.proc = subprocess.Popen(
                [UWSGI, "--emperor", self.vassals, "--emperor-freq", "1", *self.args],
                stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.dir, start_new_session=True)
        self.testcase.addCleanup(self.kill)
        return self

    def wait(self, predicate, what, timeout=START_TIMEOUT):
        def check():
            if self.proc.poll() is not None:
                raise AssertionError("the Emperor exited (%s) while waiting for %s:\n%s"
                                     % (self.proc.returncode, what, self.log_text()[-6000:]))
            return predicate()
        try:
            return wait_for(check, timeout=timeout, what=what)
        except AssertionError as e:
            raise AssertionError("%s\n--- emperor log ---\n%s"
                                 % (e, self.log_text()[-6000:])) from None


class EmperorTest(IntegrationCase):

    def start_two(self, *args):
        emperor = Emperor(self, *args)
        a, b = emperor.vassal("alpha"), emperor.vassal("beta")
        emperor.start()
        emperor.wait(lambda: a.ready() and b.ready(), "both vassals' workers ready")
        return emperor, a, b

    # ------------------------------------------------------------ checks

    def assert_own(self, vassal, other, emperor, generation=0):
        """Every event vassal recorded (both handler kinds) carries its own
        settings, comes from its own master or that master's children, and
        names nothing of the other vassal."""
        settings, global_settings = vassal.conf  # the file as last written
        self.assertEqual(settings["vassal"], vassal.name)
        self.assertEqual(global_settings["__file__"], vassal.ini)
        self.assertEqual(global_settings["here"], os.path.dirname(vassal.ini))
        master = vassal.master_pid()
        other_pids = {e["process"]["pid"] for e in other.events()}
        children = {e["child"]["pid"] for e in vassal.events("post-fork-parent")}
        for source, events in (("native", vassal.events()), ("python", vassal.python_events())):
            mine = [e for e in events if e["generation"] == generation]
            self.assertTrue(mine, "%s: no %s events of generation %d"
                            % (vassal.name, source, generation))
            for e in mine:
                where = "%s %s event %s" % (vassal.name, source, e["event"])
                self.assertEqual(e["settings"], settings, where)
                self.assertEqual(e["global_settings"], global_settings, where)
                p = e["process"]
                if p["kind"] == "master":
                    self.assertEqual(p["pid"], master, where)
                    # the vassal master is the Emperor's child
                    self.assertEqual(p["ppid"], emperor.proc.pid, where)
                else:
                    self.assertEqual(p["ppid"], master, where)
                    self.assertIn(p["pid"], children, where)
                self.assertNotIn(p["pid"], other_pids, where)
                self.assertNotEqual(p["pid"], emperor.proc.pid, where)
        # Nothing of the other vassal anywhere in this one's logs: not its
        # name, its secret, its file or its log paths.
        for path in (vassal.record, vassal.python_log):
            with open(path) as f:
                text = f.read()
            for foreign in ("secret-of-" + other.name, other.ini, other.record,
                            other.python_log, '"vassal":"%s"' % other.name):
                self.assertNotIn(foreign, text, "%s has %s" % (path, foreign))

    def assert_generation_life(self, vassal, generation=0):
        """master-start, then pre-fork/post-fork-parent per worker, and each
        worker: post-fork then worker-ready."""
        events = vassal.events(generation=generation)
        master = [e for e in events if e["process"]["kind"] == "master"]
        self.assertEqual([e["event"] for e in master[:5]], LIFECYCLE, vassal.name)
        self.assertEqual([(e["child"]["kind"], e["child"]["id"]) for e in master[1:5]],
                         [("worker", 1), ("worker", 1), ("worker", 2), ("worker", 2)])
        workers = {e["child"]["id"]: e["child"]["pid"] for e in master[1:5]
                   if e["event"] == "post-fork-parent"}
        for wid, pid in workers.items():
            seq = [e["event"] for e in events if e["process"]["pid"] == pid]
            self.assertEqual(seq[:2], ["post-fork", "worker-ready"], "%s worker %d"
                             % (vassal.name, wid))
            self.assertEqual(
                [e["process"]["id"] for e in events if e["process"]["pid"] == pid][0], wid)
        return workers

    def assert_same_via_python(self, vassal):
        """The python: handler heard exactly what the native one heard."""
        def key(e):
            return (e["event"], e["process"]["pid"], e["generation"], e.get("reason"))
        self.assertEqual(sorted(map(key, vassal.python_events())),
                         sorted(map(key, vassal.events())), vassal.name)

    def assert_clean_end(self, vassal, workers, generation):
        """Every worker's worker-exit and the master's master-exit, all
        reason shutdown, closing the generation."""
        events = vassal.events(generation=generation)
        exits = {e["process"]["pid"]: e["reason"] for e in events if e["event"] == "worker-exit"}
        self.assertEqual(exits, {pid: "shutdown" for pid in workers.values()}, vassal.name)
        self.assertEqual(events[-1]["event"], "master-exit", vassal.name)
        self.assertEqual(events[-1]["reason"], "shutdown", vassal.name)
        self.assertEqual(vassal.events("child-death"), [], vassal.name)

    def assert_refused(self, vassal):
        # OSError: refused, reset, or timed out (a refused vassal the Emperor
        # is respawning may hold its port for a moment).
        with self.assertRaises(OSError):
            vassal.get(timeout=3)

    # ------------------------------------------------------------- tests

    def test_two_vassals_own_settings_whole_life(self):
        emperor, a, b = self.start_two()
        pid_a, pid_b = int(a.get()), int(b.get())
        self.assertIn(pid_a, {e["process"]["pid"] for e in a.events("worker-ready")})
        self.assertIn(pid_b, {e["process"]["pid"] for e in b.events("worker-ready")})
        masters = {a.master_pid(), b.master_pid()}
        self.assertEqual(len(masters), 2)
        for pid in masters:
            self.assertEqual(parent_of(pid), emperor.proc.pid)

        self.assertEqual(emperor.stop(), 0, emperor.log_text()[-4000:])
        self.assertIn("The Emperor is buried.", emperor.log_text())
        for v, other in ((a, b), (b, a)):
            with self.subTest(vassal=v.name):
                workers = self.assert_generation_life(v)
                self.assert_clean_end(v, workers, 0)
                self.assert_own(v, other, emperor)
                self.assert_same_via_python(v)
                self.assertFalse(alive(v.master_pid()))
                # the Emperor's pipe to a vassal is a socketpair: no hazard
                self.assertEqual({len(e["hazards"]) for e in v.events("pre-fork")}, {0})
        self.assertNotIn("will inherit", emperor.log_text())
        self.assertNotIn("is forked while", emperor.log_text())

    def test_editing_a_vassal_reloads_it_with_new_settings_only(self):
        emperor, a, b = self.start_two()
        master = a.master_pid()
        old_workers = self.assert_generation_life(a)
        b_before = (len(b.events()), len(b.python_events()))

        a.edit()
        emperor.wait(lambda: a.ready(generation=1), "alpha's workers after its reload")
        # uWSGI 2.0.21: the Emperor writes "reload" on the vassal's pipe; the
        # vassal master gracefully reloads in place (same pid, re-exec, new
        # generation) -- the Emperor does not spawn a new vassal.
        self.assertIn("[emperor] reload the uwsgi instance alpha.ini", emperor.log_text())
        self.assertNotIn("reload the uwsgi instance beta.ini", emperor.log_text())
        gen0 = a.events(generation=0)
        self.assertEqual(gen0[-1]["event"], "master-exit")
        self.assertEqual(gen0[-1]["reason"], "reload")
        self.assertEqual(gen0[-1]["process"]["pid"], master)
        exits = {e["process"]["pid"]: e["reason"] for e in gen0 if e["event"] == "worker-exit"}
        self.assertEqual(exits, {pid: "reload" for pid in old_workers.values()})
        restart = a.events("master-start", generation=1)
        self.assertEqual(len(restart), 1)
        self.assertEqual(restart[0]["process"]["pid"], master)
        self.assertEqual(restart[0]["settings"]["release"], "2")
        new_workers = self.assert_generation_life(a, generation=1)
        self.assertFalse(set(new_workers.values()) & set(old_workers.values()))
        self.assertIn(int(a.get()), new_workers.values())
        # The other vassal heard nothing and still serves.
        self.assertEqual((len(b.events()), len(b.python_events())), b_before)
        self.assertIn(int(b.get()), {e["process"]["pid"] for e in b.events("worker-ready")})

        self.assertEqual(emperor.stop(), 0)
        self.assert_clean_end(a, new_workers, 1)
        self.assert_own(a, b, emperor, generation=1)  # release 2 everywhere in generation 1
        self.assert_own(b, a, emperor)
        self.assert_same_via_python(a)
        # generation 0 carried release 1, the file as it was
        for e in gen0:
            self.assertEqual(e["settings"]["release"], "1")

    def test_removing_a_vassal_stops_only_it(self):
        emperor, a, b = self.start_two()
        b_master = b.master_pid()
        b_workers = self.assert_generation_life(b)
        a_before = (len(a.events()), len(a.python_events()))

        os.unlink(b.ini)
        emperor.wait(lambda: b.events("master-exit"), "beta's master-exit")
        emperor.wait(lambda: not alive(b_master), "beta's master reaped by the Emperor")
        self.assertIn("[emperor] stop the uwsgi instance beta.ini", emperor.log_text())
        self.assert_clean_end(b, b_workers, 0)
        self.assertFalse(any(alive(pid) for pid in b_workers.values()))
        self.assert_refused(b)
        # alpha heard nothing and keeps serving
        self.assertEqual((len(a.events()), len(a.python_events())), a_before)
        self.assertIn(int(a.get()), {e["process"]["pid"] for e in a.events("worker-ready")})

        self.assertEqual(emperor.stop(), 0)
        self.assert_clean_end(a, self.assert_generation_life(a), 0)
        self.assert_own(a, b, emperor)
        self.assert_own(b, a, emperor)
        self.assert_same_via_python(b)

    def test_graceful_emperor_shutdown(self):
        # --emperor-graceful-shutdown: "stop" is another message on the pipe,
        # and the vassal master calls gracefully_kill_them_all() (workers get
        # SIGHUP, as in a reload): still a shutdown for forksafe.
        emperor, a, b = self.start_two("--emperor-graceful-shutdown")
        b_workers = self.assert_generation_life(b)
        os.unlink(b.ini)
        emperor.wait(lambda: b.events("master-exit"), "beta's master-exit")
        self.assert_clean_end(b, b_workers, 0)
        self.assertIn(int(a.get()), {e["process"]["pid"] for e in a.events("worker-ready")})
        self.assertEqual(emperor.stop(), 0)
        self.assertEqual(emperor.log_text().count("graceful shutdown triggered"), 2)
        self.assert_clean_end(a, self.assert_generation_life(a), 0)
        self.assert_own(a, b, emperor)
        self.assert_own(b, a, emperor)

    def test_vassal_with_bad_forksafe_config_is_refused_alone(self):
        emperor = Emperor(self)
        good = emperor.vassal("good")
        bad = emperor.vassal("bad", subscription="post_fork")
        emperor.start()
        with open(bad.ini) as f:
            line = next(i + 1 for i, l in enumerate(f) if l.startswith("post_fork"))
        expected = "[forksafe] %s:%d: unknown event 'post_fork'" % (bad.ini, line)
        emperor.wait(lambda: good.ready() and expected in emperor.log_text(),
                     "the good vassal ready and the bad one refused")
        self.assertIn(int(good.get()), {e["process"]["pid"] for e in good.events("worker-ready")})
        # refused at start-up, before master-start: not one event, no worker
        self.assertEqual(bad.events(), [])
        self.assertEqual(bad.python_events(), [])
        self.assert_refused(bad)

        self.assertEqual(emperor.stop(), 0)
        self.assert_clean_end(good, self.assert_generation_life(good), 0)
        self.assert_own(good, bad, emperor)
        self.assert_same_via_python(good)


if __name__ == "__main__":
    import unittest
    unittest.main()
