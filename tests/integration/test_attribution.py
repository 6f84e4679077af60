"""Every fork named right, every crash a crash: the master's forks for exec
hooks and daemons are neither a mule's nor a spooler's, nothing is forked
before master-start (forksafe tells a mule's or a spooler's fork by
uwsgi_mule() or spooler_start() being on the forking thread's stack), and a
child that crashes before forksafe's post_fork ran is reported as a crash."""

import os
import signal
import socket

from harness import BUILD, UWSGI_HEAD, IntegrationCase, Uwsgi, read_socket, wait_for

CRASHER = os.path.join(BUILD, "fixtures", "uwsgi", "crasher_plugin.so")

CONFIG = UWSGI_HEAD + """pythonpath = {app_dir}
wsgi-file = {app_dir}/simple_app.py
mule = {app_dir}/mule_loop.py
spooler = {dir}/spool
exec-pre-app = /bin/true
exec-post-app = /bin/true
hook-post-app = exec:/bin/true
exec-as-root = /bin/true
attach-daemon = sleep 300
forksafe-subscribe = * dl:{recorder}:record
"""


def child_of(event):
    return event["child"]["kind"], event["child"]["id"]


class ForkAttribution(IntegrationCase):

    def start(self, extra=""):
        u = Uwsgi(self, CONFIG + extra, settings={})
        os.makedirs(os.path.join(u.dir, "spool"))
        u.start(wait_ready=2)
        wait_for(lambda: {child_of(e) for e in u.events("post-fork-parent")} >=
                 {("worker", 1), ("worker", 2), ("mule", 1), ("spooler", 1)} and
                 {e["process"]["kind"] for e in u.events("post-fork")} >= {"mule", "spooler"},
                 what="every child's post-fork, and the master's post-fork-parent for it")
        return u

    def master_events(self, u):
        return [e for e in u.events() if e["process"]["kind"] == "master"]

    def test_exec_hooks_and_daemons_are_nobody(self):
        u = self.start()
        self.assertTrue(u.get("/").isdigit())
        self.assertEqual(u.stop(), 0, u.log_text()[-3000:])
        master = self.master_events(u)
        self.assertEqual(master[0]["event"], "master-start", master[:3])
        pre_forks = sorted(child_of(e) for e in master if e["event"] == "pre-fork")
        self.assertEqual(pre_forks, [("mule", 1), ("spooler", 1), ("worker", 1), ("worker", 2)],
                         "the exec hooks' and the daemon's forks must not count")
        parents = sorted(child_of(e) for e in master if e["event"] == "post-fork-parent")
        self.assertEqual(parents, pre_forks)

    def test_respawned_mule_and_spooler_are_named(self):
        u = self.start()
        for kind in ("mule", "spooler"):
            pid = [e for e in u.events("post-fork") if e["process"]["kind"] == kind][0][
                "process"]["pid"]
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: len([e for e in u.events("post-fork")
                                  if e["process"]["kind"] == kind]) >= 2,
                     what="a new %s" % kind)
        self.assertEqual(u.stop(), 0, u.log_text()[-3000:])
        master = self.master_events(u)
        pre_forks = [(child_of(e), e["child"]["respawn"]) for e in master
                     if e["event"] == "pre-fork" and e["child"]["kind"] != "worker"]
        self.assertEqual(pre_forks, [(("spooler", 1), 0), (("mule", 1), 0),
                                     (("mule", 1), 1), (("spooler", 1), 1)])

    def test_daemon_respawned_during_a_reload_is_nobody(self):
        # A smart daemon whose process ends every second is respawned by the
        # master's pidfile check, also while a graceful reload waits for a
        # busy worker - when the spooler and the mule are already gone.
        u = Uwsgi(self, CONFIG.replace("attach-daemon = sleep 300\n", "") +
                  "worker-reload-mercy = 8\n"
                  "smart-attach-daemon = {dir}/daemon.pid /bin/sh -c "
                  "'sleep 1 & echo $! > {dir}/daemon.pid; echo run >> {dir}/daemon.runs'\n",
                  settings={})
        os.makedirs(os.path.join(u.dir, "spool"))
        u.start(wait_ready=2)
        runs = os.path.join(u.dir, "daemon.runs")

        def daemon_runs():
            try:
                with open(runs) as f:
                    return f.read().count("run")
            except FileNotFoundError:
                return 0
        wait_for(lambda: {child_of(e) for e in u.events("post-fork-parent")} >=
                 {("mule", 1), ("spooler", 1)}, what="the mule and the spooler forked")
        busy = socket.create_connection(("127.0.0.1", u.port))
        self.addCleanup(busy.close)
        busy_mark = os.path.join(u.dir, "busy")
        busy.sendall(("GET /sleep?%s HTTP/1.0\r\n\r\n" % busy_mark).encode())
        wait_for(lambda: os.path.exists(busy_mark), what="a worker busy with /sleep")
        before = daemon_runs()
        u.send_signal(signal.SIGHUP)
        # the reload waits for the busy worker; meanwhile the daemon respawns
        wait_for(lambda: daemon_runs() >= before + 2, what="the daemon respawned twice")
        busy.close()
        wait_for(lambda: len(u.events("master-start")) >= 2 and
                 len(u.events("worker-ready")) >= 4, timeout=90, what="the reloaded generation")
        self.assertEqual(u.stop(), 0, u.log_text()[-3000:])
        pre_forks = [(child_of(e), e["child"]["respawn"], e["generation"])
                     for e in u.events("pre-fork") if e["child"]["kind"] != "worker"]
        self.assertEqual(sorted(pre_forks), [(("mule", 1), 0, 0), (("mule", 1), 0, 1),
                                             (("spooler", 1), 0, 0), (("spooler", 1), 0, 1)],
                         u.log_text()[-3000:])


class EarlyCrash(IntegrationCase):
    """A crash is a crash also before forksafe's post_fork ran: here another
    plugin's post_fork (the crasher fixture, in a lower slot) segfaults every
    mule, and uWSGI's crash handler ends it with exit(1)."""

    def test_mule_crash_before_forksafe_post_fork(self):
        self.check_mule_crash("")

    def test_mule_crash_before_forksafe_post_fork_lazy_apps(self):
        # uWSGI 2.0.30 and later register no atexit hook before apps load
        self.check_mule_crash("lazy-apps = true\n")

    def check_mule_crash(self, extra):
        u = Uwsgi(self, CONFIG.replace("plugins = python3,forksafe",
                                       "plugins = python3,forksafe,%s" % CRASHER) + extra,
                  settings={})
        os.makedirs(os.path.join(u.dir, "spool"))
        u.start(wait_ready=2)
        deaths = wait_for(lambda: [e for e in u.events("child-death")
                                   if e["child"]["kind"] == "mule"],
                          what="the mule's death")
        self.assertEqual(u.stop(), 0, u.log_text()[-3000:])
        self.assertIn("got Segmentation Fault", u.log_text())
        death = deaths[0]["child"]
        self.assertEqual((death["cause"], death.get("signal")), ("crash", 11), death)
        # the mule never got as far as forksafe's post-fork
        self.assertEqual([e for e in u.events() if e["process"]["kind"] == "mule"], [])

    def test_crash_loop_is_reported_death_by_death(self):
        # Every crash of the looping mule is one child-death, cause crash,
        # its respawn counted; forksafe forks nothing uWSGI did not (one
        # pre-fork per "spawned uWSGI mule"), and the master still answers.
        u = Uwsgi(self, CONFIG.replace("plugins = python3,forksafe",
                                       "plugins = python3,forksafe,%s" % CRASHER) +
                  "stats = {dir}/stats.sock\n", settings={})
        os.makedirs(os.path.join(u.dir, "spool"))
        u.start(wait_ready=2)
        def mule_deaths():
            return [e["child"] for e in u.events("child-death") if e["child"]["kind"] == "mule"]
        crashes = wait_for(lambda: len(mule_deaths()) >= 4 and mule_deaths()[:4],
                           what="four mule deaths")
        self.assertIn("workers", read_socket(os.path.join(u.dir, "stats.sock"), timeout=5))
        self.assertEqual(u.stop(), 0, u.log_text()[-3000:])
        self.assertEqual({(d["cause"], d.get("signal")) for d in crashes}, {("crash", 11)})
        # the stop can also end a mule that has not crashed yet: it exits
        deaths = mule_deaths()
        self.assertEqual([d["respawn"] for d in deaths], list(range(len(deaths))))
        pre_forks = [e for e in u.events("pre-fork") if e["child"]["kind"] == "mule"]
        self.assertEqual(len(pre_forks), u.log_text().count("spawned uWSGI mule"))


class MasterKills(IntegrationCase):
    """A child the master SIGKILLs and reaps at once, before forksafe's scan
    could peek at it (FIFO C, cheap mode: uWSGI kills every worker and
    waits for each), is still reported with its status and cause."""

    def test_go_cheap(self):
        u = Uwsgi(self, UWSGI_HEAD + """pythonpath = {app_dir}
wsgi-file = {app_dir}/simple_app.py
master-fifo = {dir}/fifo
forksafe-subscribe = * dl:{recorder}:record
""", settings={})
        u.start(wait_ready=2)
        workers = sorted(e["process"]["pid"] for e in u.events("worker-ready"))
        fd = os.open(os.path.join(u.dir, "fifo"), os.O_WRONLY | os.O_NONBLOCK)
        os.write(fd, b"C")
        os.close(fd)
        deaths = wait_for(lambda: [e["child"] for e in u.events("child-death")
                                   if len(u.events("child-death")) >= 2],
                          what="both workers' child-death")
        self.assertEqual(sorted((d["pid"], d["cause"], d.get("signal")) for d in deaths),
                         [(pid, "killed-by-master", 9) for pid in workers], u.log_text()[-3000:])
        # a request brings the workers back
        self.assertTrue(u.get("/").isdigit())
        self.assertEqual(u.stop(), 0, u.log_text()[-3000:])

    def test_evil_reload_on_rss(self):
        # the master SIGKILLs a worker over evil-reload-on-rss
        u = Uwsgi(self, UWSGI_HEAD + """pythonpath = {app_dir}
wsgi-file = {app_dir}/simple_app.py
processes = 1
evil-reload-on-rss = 1
forksafe-subscribe = * dl:{recorder}:record
""", settings={})
        u.start(wait_ready=1)
        victim = u.events("worker-ready")[0]["process"]["pid"]
        # uWSGI learns a worker's RSS after it serves a request
        deaths = wait_for(lambda: u.get("/") and u.events("child-death"), interval=0.2,
                          what="the worker's child-death")
        self.assertEqual(u.stop(), 0, u.log_text()[-3000:])
        self.assertIn("EVIL RELOAD ON WORKER 1", u.log_text())
        death = deaths[0]["child"]
        self.assertEqual((death["pid"], death["cause"], death.get("signal")),
                         (victim, "killed-by-master", 9), u.log_text()[-3000:])
