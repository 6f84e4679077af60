"""The exact per-process event sequence and payload, against a real uWSGI."""

import os
import signal

from harness import IntegrationCase, Uwsgi, core_threads_settled, wait_for

BASE = """
[uwsgi]
plugin-dir = {plugin_dir}
plugins = python3,forksafe
master = true
http-socket = 127.0.0.1:{port}
pidfile = {pidfile}
wsgi-file = {app_dir}/simple_app.py
env = FORKSAFE_TEST_RECORD={record}
forksafe-settings = %p
forksafe-subscribe = * dl:{recorder}:record
"""

SETTINGS = {"sqlalchemy.url": "postgresql://app:s3cret@127.0.0.1/app", "answer": "42"}


# test_spooler's worker-exit handler: returns once the spooler whose pid
# the test wrote is dead (a zombie, or reaped), within its 30 s timeout.
AWAIT_SPOOLER_DEATH = """\
pid=$(cat %(dir)s/spooler.pid 2>/dev/null) || exit 0
while [ -e /proc/$pid ] && ! grep -q '^State:[[:space:]]*Z' /proc/$pid/status 2>/dev/null; do
    sleep 0.05
done
"""


def child_of(event):
    c = event["child"]
    return (c["kind"], c["id"])


class LifecycleTest(IntegrationCase):

    def start(self, extra="", processes=2, ready=None, settings=SETTINGS):
        body = BASE + "processes = %d\n" % processes + extra
        instance = Uwsgi(self, body, settings=settings)
        instance.start(wait_ready=processes if ready is None else ready)
        return instance

    def master_events(self, instance):
        return [e for e in instance.events() if e["process"]["kind"] == "master"]

    def assert_worker_life(self, instance, wid, names):
        seqs = {k: v for k, v in instance.by_process().items() if k[0] == "worker" and k[1] == wid}
        self.assertTrue(seqs, "no events from worker %d" % wid)
        for key, seq in seqs.items():
            self.assertEqual(seq, names, "worker %s" % (key,))

    def assert_payload_shape(self, instance):
        master_pid = instance.master_pid
        for e in instance.events():
            if e["event"] == "app-loaded":
                continue
            self.assertEqual(e["container"], "uwsgi")
            self.assertEqual(e["generation"], 0)
            self.assertEqual(e["settings"]["answer"], "42")
            self.assertEqual(e["settings"]["sqlalchemy.url"], SETTINGS["sqlalchemy.url"])
            self.assertEqual(e["settings"]["forksafe.event_log"], instance.record)
            self.assertEqual(e["global_settings"]["__file__"], instance.ini)
            self.assertEqual(e["global_settings"]["here"], instance.dir)
            self.assertIsInstance(e["time"], float)
            p = e["process"]
            if p["kind"] == "master":
                self.assertEqual(p["pid"], master_pid)
                self.assertEqual(p["id"], 0)
            else:
                self.assertEqual(p["ppid"], master_pid)
                self.assertGreaterEqual(p["id"], 1)
            if e["event"] in ("pre-fork", "post-fork-parent", "child-death"):
                self.assertIn("child", e)
            else:
                self.assertNotIn("child", e)
            if e["event"] in ("worker-exit", "master-exit"):
                self.assertIn("reason", e)
            else:
                self.assertNotIn("reason", e)

    def test_preloaded_app_full_life(self):
        u = self.start()
        u.get("/")
        wait_for(lambda: u.events("generation-ready"), what="generation-ready")
        self.assertEqual(u.stop(), 0)
        master = self.master_events(u)
        self.assertEqual([e["event"] for e in master],
                         ["master-start", "pre-fork", "post-fork-parent", "pre-fork",
                          "post-fork-parent", "generation-ready", "master-exit"])
        self.assertEqual([child_of(e) for e in master[1:5]],
                         [("worker", 1), ("worker", 1), ("worker", 2), ("worker", 2)])
        self.assertNotIn("pid", master[1]["child"])
        self.assertEqual([(w["id"], w["pid"]) for w in master[5]["workers"]],
                         [child_of(e)[1:] + (e["child"]["pid"],) for e in master[2:5:2]])
        self.assertEqual(master[6]["reason"], "shutdown")
        worker_pids = {e["child"]["id"]: e["child"]["pid"] for e in master
                       if e["event"] == "post-fork-parent"}
        for wid in (1, 2):
            self.assert_worker_life(u, wid, ["post-fork", "worker-ready", "worker-exit"])
            exits = [e for e in u.events("worker-exit") if e["process"]["id"] == wid]
            self.assertEqual(exits[0]["reason"], "shutdown")
            self.assertEqual(exits[0]["process"]["pid"], worker_pids[wid])
            self.assertEqual(exits[0]["respawn"], 0)
        # preloaded: the app loads once, in the master, before any fork
        loads = u.events("app-loaded")
        self.assertEqual([e["process"]["pid"] for e in loads], [u.master_pid])
        self.assertEqual(u.events("child-death"), [])
        self.assert_payload_shape(u)

    def test_lazy_apps_post_fork_runs_before_app_loading(self):
        u = self.start("lazy-apps = true\n")
        self.assertEqual(u.stop(), 0)
        events = u.events()
        for wid in (1, 2):
            pid = [e["process"]["pid"] for e in events
                   if e["event"] == "post-fork" and e["process"]["id"] == wid][0]
            seq = [e["event"] for e in events if e["process"]["pid"] == pid]
            self.assertEqual(seq, ["post-fork", "app-loaded", "worker-ready", "worker-exit"])
        self.assertNotIn(u.master_pid, [e["process"]["pid"] for e in u.events("app-loaded")])
        self.assert_payload_shape(u)

    def test_threads(self):
        u = self.start("enable-threads = true\nthreads = 4\n")
        for _ in range(5):
            u.get("/")
        workers = [e["process"]["pid"] for e in u.events("worker-ready")]
        wait_for(lambda: core_threads_settled(workers),
                 what="every worker's core threads blocking signals")
        self.assertEqual(u.stop(), 0)
        for wid in (1, 2):
            self.assert_worker_life(u, wid, ["post-fork", "worker-ready", "worker-exit"])
        self.assertEqual(len(u.events("master-start")), 1)

    def test_respawn_after_max_requests(self):
        u = self.start("max-requests = 1\nmin-worker-lifetime = 0\nforkbomb-delay = 0\n",
                       processes=1)
        first_pid = int(u.get("/"))
        wait_for(lambda: len(u.events("worker-ready")) >= 2, what="respawned worker ready")
        self.assertEqual(u.stop(), 0)
        exits = u.events("worker-exit")
        self.assertEqual(exits[0]["process"]["pid"], first_pid)
        self.assertEqual(exits[0]["reason"], "max-requests")
        master = self.master_events(u)
        forks = [e for e in master if e["event"] == "pre-fork"]
        self.assertEqual([e["child"]["respawn"] for e in forks[:2]], [0, 1])
        parents = [e for e in master if e["event"] == "post-fork-parent"]
        self.assertEqual(parents[0]["child"]["pid"], first_pid)
        self.assertNotEqual(parents[1]["child"]["pid"], first_pid)
        second = [e for e in u.events("post-fork") if e["process"]["pid"] != first_pid][0]
        self.assertEqual(second["respawn"], 1)
        # a graceful recycle is not a death
        self.assertEqual(u.events("child-death"), [])

    def test_worker_sigkill_is_a_child_death(self):
        u = self.start(processes=1)
        pid = int(u.get("/"))
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: u.events("child-death"), what="child-death")
        wait_for(lambda: len(u.events("worker-ready")) >= 2, what="respawned worker ready")
        self.assertEqual(u.stop(), 0)
        death = u.events("child-death")[0]
        self.assertEqual(death["process"]["pid"], u.master_pid)
        self.assertEqual(death["child"]["pid"], pid)
        self.assertEqual(death["child"]["kind"], "worker")
        self.assertEqual(death["child"]["signal"], 9)
        self.assertEqual(death["child"]["cause"], "signal")
        self.assertEqual([e for e in u.events("worker-exit") if e["process"]["pid"] == pid], [])
        master = [e["event"] for e in self.master_events(u)]
        i = master.index("child-death")
        self.assertEqual(master[i + 1:i + 3], ["pre-fork", "post-fork-parent"])

    def test_graceful_reload(self):
        u = self.start()
        old_master_start = u.events("master-start")[0]
        u.send_signal(signal.SIGHUP)
        wait_for(lambda: len(u.events("master-start")) >= 2, what="master-start after reload")
        wait_for(lambda: len(u.events("worker-ready")) >= 4, what="workers after reload")
        self.assertEqual(u.stop(), 0)
        master_exits = u.events("master-exit")
        self.assertEqual([e["reason"] for e in master_exits], ["reload", "shutdown"])
        self.assertEqual([e["generation"] for e in master_exits], [0, 1])
        starts = u.events("master-start")
        self.assertEqual([e["generation"] for e in starts], [0, 1])
        self.assertEqual(starts[1]["process"]["pid"], old_master_start["process"]["pid"])
        gen0_exits = [e for e in u.events("worker-exit") if e["generation"] == 0]
        self.assertEqual(sorted(e["reason"] for e in gen0_exits), ["reload", "reload"])
        gen1_exits = [e for e in u.events("worker-exit") if e["generation"] == 1]
        self.assertEqual(sorted(e["reason"] for e in gen1_exits), ["shutdown", "shutdown"])
        self.assertEqual(u.events("child-death"), [])

    def test_mule(self):
        u = self.start("mule = {app_dir}/mule_loop.py\n".format(
            app_dir=os.path.join(os.path.dirname(__file__), "apps")))
        wait_for(lambda: [e for e in u.events("post-fork") if e["process"]["kind"] == "mule"],
                 what="mule post-fork")
        wait_for(lambda: [e for e in u.events("post-fork-parent")
                          if e["child"]["kind"] == "mule"], what="mule post-fork-parent")
        self.assertEqual(u.stop(), 0)
        mule = [e for e in u.events() if e["process"]["kind"] == "mule"]
        self.assertEqual([e["event"] for e in mule], ["post-fork", "worker-exit"])
        self.assertEqual(mule[0]["process"]["id"], 1)
        master = [(e["event"], child_of(e)) for e in self.master_events(u) if "child" in e]
        self.assertIn(("pre-fork", ("mule", 1)), master)
        self.assertLess(master.index(("pre-fork", ("mule", 1))),
                        master.index(("post-fork-parent", ("mule", 1))))

    def test_spooler(self):
        spool = "spooler-dir"
        u = Uwsgi(self, BASE + "processes = 1\nspooler = %(here)s/" + spool + "\n"
                  "spooler-frequency = 1\n"
                  "forksafe-subscribe = worker-exit kind=worker exec:/bin/sh "
                  "%(here)s/await-spooler-death.sh\n", settings=SETTINGS)
        os.makedirs(os.path.join(u.dir, spool))
        with open(os.path.join(u.dir, "await-spooler-death.sh"), "w") as f:
            f.write(AWAIT_SPOOLER_DEATH % {"dir": u.dir})
        with open(u.ini) as f:
            text = f.read().replace("%(here)s", u.dir)
        with open(u.ini, "w") as f:
            f.write(text)
        u.start(wait_ready=1)
        spooler_fork = wait_for(lambda: [e for e in u.events("post-fork")
                                         if e["process"]["kind"] == "spooler"],
                                what="spooler post-fork")
        # At shutdown uWSGI SIGKILLs the spooler and does not wait for it:
        # the master's last scan sees its death only if it is dead by then.
        # The worker's worker-exit handler (above) holds the master, which
        # waits for its workers, until the spooler has died.
        with open(os.path.join(u.dir, "spooler.pid"), "w") as f:
            f.write("%d\n" % spooler_fork[0]["process"]["pid"])
        self.assertEqual(u.stop(), 0)
        master = [(e["event"], child_of(e)) for e in self.master_events(u) if "child" in e]
        self.assertEqual(master[0], ("pre-fork", ("spooler", 1)))
        self.assertIn(("post-fork-parent", ("spooler", 1)), master)
        spooler = [e["event"] for e in u.events() if e["process"]["kind"] == "spooler"]
        self.assertEqual(spooler, ["post-fork"])
        # uWSGI SIGKILLs the spooler at shutdown: it never runs worker-exit
        deaths = [e for e in u.events("child-death") if e["child"]["kind"] == "spooler"]
        self.assertEqual(len(deaths), 1, u.events())
        self.assertIn(deaths[0]["child"]["cause"], ("killed-by-master", "unknown"))

    def fire_and_forget(self, u, path):
        import socket
        s = socket.create_connection(("127.0.0.1", u.port))
        s.sendall(("GET %s HTTP/1.0\r\n\r\n" % path).encode())
        self.addCleanup(s.close)

    def test_harakiri_is_a_child_death(self):
        u = self.start("harakiri = 1\n", processes=1)
        pid = int(u.get("/"))
        self.fire_and_forget(u, "/sleep")
        wait_for(lambda: u.events("child-death"), what="child-death")
        wait_for(lambda: len(u.events("worker-ready")) >= 2, what="respawned worker ready")
        self.assertEqual(u.stop(), 0)
        death = u.events("child-death")[0]
        self.assertEqual(death["child"]["pid"], pid)
        self.assertEqual(death["child"]["cause"], "harakiri")
        self.assertEqual(death["child"]["signal"], 9)

    def test_segfault_is_a_child_death(self):
        u = self.start(processes=1)
        pid = int(u.get("/"))
        self.fire_and_forget(u, "/segv")
        wait_for(lambda: u.events("child-death"), what="child-death")
        wait_for(lambda: len(u.events("worker-ready")) >= 2, what="respawned worker ready")
        self.assertEqual(u.stop(), 0)
        death = u.events("child-death")[0]
        self.assertEqual(death["child"]["pid"], pid)
        self.assertEqual(death["child"]["cause"], "crash")
        self.assertEqual(death["child"]["signal"], 11)
        self.assertEqual([e for e in u.events("worker-exit") if e["process"]["pid"] == pid], [])
