"""Every way uWSGI stops or reloads gives its own worker-exit reason: the
master's signals, its FIFO commands and touch files, with a daemon attached
(uWSGI's master then sleeps in uwsgi_detach_daemons() right after signalling
the workers) and a worker busy with a request.  Each scenario also runs on
bare uWSGI (no forksafe), and the two must do the same: the same spawns and
respawns, the same exit status."""

import collections
import os
import re
import signal
import socket
import time

from harness import EMBEDDED, UWSGI_HEAD, IntegrationCase, Uwsgi, wait_for, workers_accepting

# FORKSAFE_SIDE_BY_SIDE=0: the forksafe runs alone (long repeated proofs).
SIDE_BY_SIDE = os.environ.get("FORKSAFE_SIDE_BY_SIDE", "1") != "0"

CONFIG = UWSGI_HEAD + """pythonpath = {app_dir}
wsgi-file = {app_dir}/simple_app.py
mule = {app_dir}/mule_loop.py
master-fifo = {dir}/fifo
touch-reload = {dir}/touch-reload
touch-chain-reload = {dir}/touch-chain-reload
touch-workers-reload = {dir}/touch-workers-reload
attach-daemon = sleep 300
worker-reload-mercy = 30
stats = {dir}/stats.sock
forksafe-subscribe = * dl:{recorder}:record
"""

# What uWSGI says it does, the numbers taken out.
STORY = re.compile(r"^(spawned uWSGI worker|Respawned uWSGI worker|spawned uWSGI mule"
                   r"|chain reloading complete|goodbye to uWSGI|Gracefully killing worker)",
                   re.M)


def bare(config):
    """The same instance without forksafe."""
    lines = [line for line in config.splitlines() if not line.startswith("forksafe-")]
    return "\n".join(lines).replace("plugins = python3,forksafe", "plugins = python3") + "\n"


def story(u):
    return collections.Counter(m.group(1) for m in STORY.finditer(u.log_text()))


def count(u, text):
    return u.log_text().count(text)


def fifo(command):
    def send(u):
        fd = os.open(os.path.join(u.dir, "fifo"), os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(fd, command.encode())
        finally:
            os.close(fd)
    send.__name__ = "fifo %s" % command
    return send


def touch(name):
    def send(u):
        # later than any mtime uWSGI stored at start, whatever the clock's grain
        later = time.time() + 10
        os.utime(os.path.join(u.dir, name), (later, later))
    send.__name__ = name
    return send


def signal_master(signum):
    def send(u):
        u.send_signal(signum)
    send.__name__ = signal.Signals(signum).name
    return send


class Reasons(IntegrationCase):

    daemon = True  # the master sleeps 1 s after signalling the workers
    busy = True  # a worker is in a request when the order comes
    compare_with_bare = True

    def run_scenario(self, trigger, outcome, extra="", forksafe=True):
        """Starts uWSGI with a worker busy, pulls TRIGGER, waits for OUTCOME
        ("shutdown", "reload" or "workers-reload") to complete in uWSGI's
        own log, stops it if it still runs; returns (instance, exit status,
        pids of the first generation's workers)."""
        config = CONFIG + extra
        if not self.daemon:
            config = config.replace("attach-daemon = sleep 300\n", "")
        u = Uwsgi(self, config if forksafe else bare(config), settings={} if forksafe else None)
        for name in ("touch-reload", "touch-chain-reload", "touch-workers-reload"):
            open(os.path.join(u.dir, name), "w").close()
        u.start()
        stats = os.path.join(u.dir, "stats.sock")
        # uWSGI itself loses a stop that reaches a worker still starting
        # (forksafe closes that gap, bare uWSGI does not): both runs wait
        # until uWSGI has finished starting every worker.
        wait_for(lambda: count(u, "spawned uWSGI mule 1") and os.path.exists(
            os.path.join(u.dir, "fifo")) and workers_accepting(stats, 2),
            what="workers and the mule")
        first = {int(pid) for pid in re.findall(r"spawned uWSGI worker \d \(pid: (\d+)",
                                                 u.log_text())}
        if self.busy:
            busy = socket.create_connection(("127.0.0.1", u.port))
            self.addCleanup(busy.close)
            mark = os.path.join(u.dir, "busy")
            busy.sendall(("GET /busy?%s HTTP/1.0\r\n\r\n" % mark).encode())
            wait_for(lambda: os.path.exists(mark), what="a worker busy with a request")
        if forksafe:
            wait_for(lambda: len(u.events("worker-ready")) >= 2, what="2 worker-ready")
        trigger(u)
        if outcome == "shutdown":
            status = u.proc.wait(timeout=60)
        else:
            if outcome == "reload":
                wait_for(lambda: count(u, "spawned uWSGI worker") >= 4, timeout=90,
                         what="the reloaded generation's workers")
            else:
                wait_for(lambda: count(u, "Respawned uWSGI worker") >= 2, timeout=90,
                         what="both workers respawned")
            wait_for(lambda: workers_accepting(stats, 2), what="the new workers accepting")
            if forksafe:
                wait_for(lambda: len(u.events("worker-ready")) >= 4, timeout=60,
                         what="the new workers ready")
                # a mule still starting when the stop comes is SIGKILLed by
                # the master before it can exit (uWSGI's way, bare too)
                wait_for(lambda: len([e for e in u.events("post-fork")
                                      if e["process"]["kind"] == "mule"]) >= (
                                          2 if outcome == "reload" else 1),
                         what="the mule started")
            status = u.stop()
        return u, status, first

    def check(self, trigger, outcome, reason, extra=""):
        u, status, first = self.run_scenario(trigger, outcome, extra)
        log = u.log_text()[-4000:]
        exits = {e["process"]["pid"]: e["reason"] for e in u.events("worker-exit")}
        self.assertEqual({pid: exits.get(pid) for pid in first},
                         {pid: reason for pid in first}, log)
        mule_exits = [e["reason"] for e in u.events("worker-exit")
                      if e["process"]["kind"] == "mule"]
        master_exits = [e["reason"] for e in u.events("master-exit")]
        if outcome == "shutdown":
            self.assertEqual((mule_exits, master_exits), (["shutdown"], ["shutdown"]), log)
        elif outcome == "reload":
            self.assertEqual((mule_exits, master_exits),
                             (["reload", "shutdown"], ["reload", "shutdown"]), log)
        else:
            self.assertEqual((mule_exits, master_exits), (["shutdown"], ["shutdown"]), log)
        if EMBEDDED or not SIDE_BY_SIDE or not self.compare_with_bare:
            return
        plain, plain_status, _ = self.run_scenario(trigger, outcome, extra, forksafe=False)
        self.assertEqual((story(u), status), (story(plain), plain_status),
                         "uWSGI with forksafe did otherwise than bare uWSGI:\n%s\n--- bare:\n%s"
                         % (log, plain.log_text()[-4000:]))

    # stops
    def test_fifo_q(self):
        self.check(fifo("q"), "shutdown", "shutdown")

    def test_fifo_Q(self):
        self.check(fifo("Q"), "shutdown", "shutdown")

    def test_sigint(self):
        self.check(signal_master(signal.SIGINT), "shutdown", "shutdown")

    def test_sigquit(self):
        self.check(signal_master(signal.SIGQUIT), "shutdown", "shutdown")

    def test_sigterm_die_on_term(self):
        self.check(signal_master(signal.SIGTERM), "shutdown", "shutdown", "die-on-term = true\n")

    # reloads of the whole instance
    def test_fifo_r(self):
        self.check(fifo("r"), "reload", "reload")

    def test_fifo_R(self):
        self.check(fifo("R"), "reload", "reload")

    def test_sighup(self):
        self.check(signal_master(signal.SIGHUP), "reload", "reload")

    def test_sigterm(self):
        self.check(signal_master(signal.SIGTERM), "reload", "reload")

    def test_touch_reload(self):
        self.check(touch("touch-reload"), "reload", "reload")

    # reloads of the workers alone
    def test_fifo_c(self):
        self.check(fifo("c"), "workers-reload", "reload")

    def test_fifo_w(self):
        self.check(fifo("w"), "workers-reload", "reload")

    def test_fifo_W(self):
        self.check(fifo("W"), "workers-reload", "reload")

    def test_touch_chain_reload(self):
        self.check(touch("touch-chain-reload"), "workers-reload", "reload")

    def test_touch_workers_reload(self):
        self.check(touch("touch-workers-reload"), "workers-reload", "reload")


class ReasonsQuiet(Reasons):
    """The same orders with no daemon attached and every worker idle."""

    daemon = False
    busy = False
    compare_with_bare = False


class StopAtRespawn(IntegrationCase):
    """A worker forked a moment before or after a stop reports that stop:
    a master handler stops the instance while a killed worker is forked
    again, before the new worker's own post-fork has run."""

    def check(self, event):
        u = Uwsgi(self, UWSGI_HEAD + """pythonpath = {app_dir}
wsgi-file = {app_dir}/simple_app.py
forksafe-subscribe = * dl:{recorder}:record
forksafe-subscribe = %s python:handlers:stop_at_respawn
""" % event, settings={})
        u.start(wait_ready=2)
        victim = u.events("worker-ready")[0]["process"]["pid"]
        os.kill(victim, signal.SIGKILL)
        self.assertEqual(u.proc.wait(timeout=60), 0, u.log_text()[-4000:])
        respawned = [e for e in u.events("post-fork") if e["respawn"] == 1]
        self.assertEqual(len(respawned), 1, u.log_text()[-4000:])
        pid = respawned[0]["process"]["pid"]
        self.assertEqual([e["reason"] for e in u.events("worker-exit")
                          if e["process"]["pid"] == pid], ["shutdown"], u.log_text()[-4000:])
        self.assertEqual({e["reason"] for e in u.events("worker-exit")}, {"shutdown"})

    def test_stop_in_pre_fork(self):
        self.check("pre-fork")

    def test_stop_in_a_mules_pre_fork(self):
        # the master forks the mule anyway: it must take the stop too
        u = Uwsgi(self, UWSGI_HEAD + """pythonpath = {app_dir}
wsgi-file = {app_dir}/simple_app.py
mule = {app_dir}/mule_loop.py
forksafe-subscribe = * dl:{recorder}:record
forksafe-subscribe = pre-fork python:handlers:stop_at_mule_respawn
""", settings={})
        u.start(wait_ready=2)
        first = wait_for(lambda: [e for e in u.events("post-fork")
                                  if e["process"]["kind"] == "mule"], what="the mule")
        os.kill(first[0]["process"]["pid"], signal.SIGKILL)
        self.assertEqual(u.proc.wait(timeout=60), 0, u.log_text()[-4000:])
        self.assertNotIn("NO MERCY", u.log_text())
        mules = [e for e in u.events("post-fork") if e["process"]["kind"] == "mule"]
        self.assertEqual(len(mules), 2, u.log_text()[-4000:])
        self.assertEqual([e["reason"] for e in u.events("worker-exit")
                          if e["process"]["pid"] == mules[1]["process"]["pid"]], ["shutdown"],
                         u.log_text()[-4000:])

    def test_stop_in_post_fork_parent(self):
        self.check("post-fork-parent")


class Recycles(IntegrationCase):
    """The master's other ways to end a worker: its lifetime, its memory,
    the cheaper algorithm; and the same spawns and exit status as bare."""

    def run_one(self, extra, ended, forksafe=True):
        config = UWSGI_HEAD + """pythonpath = {app_dir}
wsgi-file = {app_dir}/simple_app.py
master-fifo = {dir}/fifo
stats = {dir}/stats.sock
forksafe-subscribe = * dl:{recorder}:record
""" + extra
        u = Uwsgi(self, config if forksafe else bare(config), settings={} if forksafe else None)
        u.start()
        stats = os.path.join(u.dir, "stats.sock")
        wait_for(lambda: workers_accepting(stats, 1) and os.path.exists(
            os.path.join(u.dir, "fifo")), what="a worker accepting")
        ended(u)
        wait_for(lambda: workers_accepting(stats, 1), what="a worker accepting again")
        if forksafe:
            wait_for(lambda: u.events("worker-exit"), what="the worker's worker-exit")
        return u, u.stop()

    def check(self, extra, ended, reason):
        u, status = self.run_one(extra, ended)
        log = u.log_text()[-4000:]
        first = [e for e in u.events("worker-exit") if e["generation"] == 0]
        self.assertEqual(first[0]["reason"], reason, log)
        self.assertEqual(u.events("child-death"), [], log)
        if EMBEDDED or not SIDE_BY_SIDE:
            return
        plain, plain_status = self.run_one(extra, ended, forksafe=False)
        # a worker's next lifetime or cheaping may or may not come before the stop
        self.assertEqual((set(story(u)), status), (set(story(plain)), plain_status),
                         "uWSGI with forksafe did otherwise than bare uWSGI:\n%s\n--- bare:\n%s"
                         % (log, plain.log_text()[-4000:]))

    def test_max_worker_lifetime(self):
        def ended(u):
            wait_for(lambda: count(u, "lifetime reached"), what="a worker's lifetime reached")
            wait_for(lambda: count(u, "Respawned uWSGI worker"), what="the worker respawned")
        self.check("processes = 1\nmin-worker-lifetime = 1\nmax-worker-lifetime = 3\n", ended,
                   "recycle")

    def test_reload_on_rss(self):
        def ended(u):
            # uWSGI recycles only a worker older than min-worker-lifetime
            wait_for(lambda: u.get("/") and count(u, "Respawned uWSGI worker"), interval=0.2,
                     what="the worker respawned")
        self.check("processes = 1\nmin-worker-lifetime = 1\nreload-on-rss = 1\n", ended,
                   "recycle")

    def test_cheaper_by_fifo(self):
        def ended(u):
            wait_for(lambda: count(u, "spawned uWSGI worker 2"), what="two workers")
            fifo("-")(u)
            wait_for(lambda: count(u, "cheaped."), what="a worker cheaped")
        self.check("min-worker-lifetime = 1\ncheaper = 1\ncheaper-initial = 2\n"
                   "cheaper-overload = 3600\n", ended,
                   "cheaper")
