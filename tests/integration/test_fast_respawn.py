"""forksafe-fast-respawn: a worker, mule or spooler that finished starting
and dies wakes uWSGI's master at once (a pidfd in its event queue), so the
master reaps and replaces it without waiting for its next cycle; and uWSGI's
own protections around respawns hold as without it.

The master's cycle is made long (check-interval = 300 s): then only a
wake-up brings the replacement within the tests' 60 s bound.  A test waits
until the master watches each child (its pidfds, in /proc/PID/fd) before
it kills one: a child that dies while it starts is left to uWSGI's pace.
"""

import os
import signal
import time
import urllib.error

from harness import IntegrationCase, Uwsgi, read_socket, wait_for

LONG_CYCLE = """
[uwsgi]
plugin-dir = {plugin_dir}
plugins = python3,forksafe
master = true
processes = 2
die-on-term = true
check-interval = 300
http-socket = 127.0.0.1:{port}
pidfile = {pidfile}
wsgi-file = {app_dir}/simple_app.py
forksafe-settings = %p
forksafe-subscribe = * dl:{recorder}:record
"""


def pidfds(pid):
    """How many pidfds process PID holds."""
    count = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == "anon_inode:[pidfd]":
                count += 1
        except FileNotFoundError:
            pass
    return count


def poke(u):
    try:
        read_socket(os.path.join(u.dir, "stats.sock"))
    except (OSError, ValueError):
        pass


def zombie(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return False


def live(instance, kind):
    """{id: pid} of the KIND children whose post-fork-parent came and whose
    child-death has not."""
    alive = {}
    for e in instance.events():
        child = e.get("child")
        if e["process"]["kind"] != "master" or not child or child["kind"] != kind:
            continue
        if e["event"] == "post-fork-parent":
            alive[child["id"]] = child["pid"]
        elif e["event"] == "child-death" and alive.get(child["id"]) == child["pid"]:
            del alive[child["id"]]
    return alive


class RespawnCase(IntegrationCase):
    def start(self, extra="", ready=2, watched=2):
        u = Uwsgi(self, LONG_CYCLE + extra, settings={})
        u.start(wait_ready=ready)
        wait_for(lambda: pidfds(u.master_pid) == watched,
                 what="the master watching %d children" % watched)
        return u

    def replaced(self, u, kind, wid, old_pid):
        wait_for(lambda: live(u, kind).get(wid, old_pid) != old_pid,
                 what="%s %d (pid %d) replaced" % (kind, wid, old_pid))
        return live(u, kind)[wid]


class FastRespawn(RespawnCase):
    def test_a_killed_worker_is_replaced_without_waiting_for_the_cycle(self):
        u = self.start()
        for round_ in range(3):
            old = live(u, "worker")[1]
            os.kill(old, signal.SIGKILL)
            new = self.replaced(u, "worker", 1, old)
            wait_for(lambda: any(e["process"]["pid"] == new for e in u.events("worker-ready")),
                     what="the new worker ready")
            wait_for(lambda: pidfds(u.master_pid) == 2, what="the new worker watched")
        deaths = [e for e in u.events("child-death") if e["child"]["kind"] == "worker"]
        self.assertEqual([d["child"]["cause"] for d in deaths], ["signal"] * 3)
        self.assertEqual(u.stop(), 0)

    def test_a_crashed_worker_and_a_killed_mule_are_replaced(self):
        u = self.start("mule = {app_dir}/mule_loop.py\n", watched=3)
        try:
            u.get("/segv")
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        wait_for(lambda: [e for e in u.events("child-death") if e["child"]["cause"] == "crash"],
                 what="a worker's crash")
        crashed = [e for e in u.events("child-death") if e["child"]["cause"] == "crash"][0]
        self.replaced(u, "worker", crashed["child"]["id"], crashed["child"]["pid"])
        mule = live(u, "mule")[1]
        os.kill(mule, signal.SIGKILL)
        self.replaced(u, "mule", 1, mule)
        self.assertEqual(u.stop(), 0)

    def test_off(self):
        u = self.start("forksafe-fast-respawn = false\nstats = {dir}/stats.sock\n", watched=0)
        old = live(u, "worker")[1]
        os.kill(old, signal.SIGKILL)
        # Nothing wakes the master for 300 s: after a few, worker 1 is
        # still the dead one (a zombie until uWSGI reaps it).
        time.sleep(3)
        self.assertEqual(live(u, "worker")[1], old)
        self.assertEqual(pidfds(u.master_pid), 0)
        # A read of uWSGI's stats socket is an event: the master wakes and
        # replaces it then.  Its stop needs the same pokes.
        poke(u)
        self.replaced(u, "worker", 1, old)
        u.send_signal(signal.SIGINT)
        wait_for(lambda: poke(u) or u.proc.poll() is not None, interval=0.2,
                 what="uWSGI stopped")
        self.assertEqual(u.stop(), 0)

    def test_a_child_that_dies_while_it_starts_is_left_to_uwsgi(self):
        # Once the file `die` exists, a new worker's post-fork handler
        # kills the worker: it dies before it is ready, as in a crash loop.
        u = self.start("forksafe-subscribe = post-fork exec:[ -e {dir}/die ] && kill -9 $PPID; true\n")
        open(os.path.join(u.dir, "die"), "w").close()
        old = live(u, "worker")[1]
        os.kill(old, signal.SIGKILL)
        new = self.replaced(u, "worker", 1, old)
        wait_for(lambda: zombie(new), what="the new worker killed by its post-fork handler")
        # It was never watched: the master, its cycle 300 s long, has not
        # reaped it a few seconds later.
        time.sleep(3)
        self.assertTrue(zombie(new))
        self.assertEqual(live(u, "worker")[1], new)
        self.assertEqual(pidfds(u.master_pid), 1)
        self.assertEqual(u.stop(), 0)


class UwsgiProtections(RespawnCase):
    """forkbomb-delay, min-worker-lifetime and cheaper, as uWSGI has them."""

    BODY = LONG_CYCLE.replace("check-interval = 300", "check-interval = 1")

    def test_forkbomb_delay_still_holds_back_a_crash_loop(self):
        u = Uwsgi(self, self.BODY.replace("processes = 2", "processes = 1")
                  + "forkbomb-delay = 2\n", settings={})
        u.start(wait_ready=1)
        for _ in range(4):
            wait_for(lambda: pidfds(u.master_pid) == 1, what="the worker watched")
            old = live(u, "worker")[1]
            try:
                u.get("/segv")
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            self.replaced(u, "worker", 1, old)
            if "worker respawning too fast" in u.log_text():
                break
        self.assertLogHas(u, "worker respawning too fast !!! i have to sleep a bit (2 seconds)")
        # The master slept between that death and the next fork.
        master = [e for e in u.events() if e["process"]["kind"] == "master"
                  and e["event"] in ("child-death", "pre-fork")]
        gaps = [b["time"] - a["time"] for a, b in zip(master, master[1:])
                if a["event"] == "child-death" and b["event"] == "pre-fork"]
        self.assertGreaterEqual(max(gaps), 1.9, gaps)
        self.assertEqual(u.stop(), 0)

    def test_min_worker_lifetime_still_bounds_max_requests(self):
        u = Uwsgi(self, self.BODY.replace("processes = 2", "processes = 1")
                  + "max-requests = 1\nmin-worker-lifetime = 3\n", settings={})
        u.start(wait_ready=1)
        first = live(u, "worker")[1]
        deadline = time.monotonic() + 60
        served_by_first = 0
        while live(u, "worker").get(1) == first and time.monotonic() < deadline:
            try:
                served_by_first += str(first) in u.get("/")
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
        # max-requests = 1 alone would end it after its first request.
        self.assertGreater(served_by_first, 1)
        born = [e["time"] for e in u.events("post-fork") if e["process"]["pid"] == first][0]
        wait_for(lambda: [e for e in u.events("worker-exit") if e["process"]["pid"] == first],
                 what="the first worker's worker-exit")
        died = [e["time"] for e in u.events("worker-exit") if e["process"]["pid"] == first][0]
        # uWSGI counts the lifetime from the master's clock in whole
        # seconds, which lags (a second, more on a busy machine).
        self.assertGreaterEqual(died - born, 1.0)
        self.assertEqual(u.stop(), 0)

    def test_cheaper_keeps_its_count(self):
        stats = "{dir}/stats.sock"
        u = Uwsgi(self, self.BODY.replace("processes = 2", "processes = 3")
                  + "cheaper = 1\ncheaper-initial = 1\nstats = %s\n" % stats, settings={})
        u.start(wait_ready=1)
        wait_for(lambda: pidfds(u.master_pid) == 1, what="the worker watched")
        old = live(u, "worker")[1]
        os.kill(old, signal.SIGKILL)
        self.replaced(u, "worker", 1, old)
        wait_for(lambda: pidfds(u.master_pid) == 1, what="the new worker watched")
        workers = read_socket(os.path.join(u.dir, "stats.sock"))["workers"]
        self.assertEqual([w["id"] for w in workers if w["pid"] > 0], [1])
        self.assertEqual(sorted(live(u, "worker")), [1])
        self.assertEqual(u.stop(), 0)


class BadValue(IntegrationCase):
    def test_a_bad_value_is_named_with_its_line(self):
        u = Uwsgi(self, LONG_CYCLE + "forksafe-fast-respawn = often\n", settings={})
        self.assertEqual(u.run_to_exit(), 1, u.log_text())
        with open(u.ini) as f:
            number = [n for n, line in enumerate(f, 1)
                      if line.strip() == "forksafe-fast-respawn = often"][0]
        self.assertIn("[forksafe] %s:%d: forksafe-fast-respawn must be true or false, not 'often'"
                      % (u.ini, number), u.log_text())
        self.assertNotIn("spawned uWSGI worker", u.log_text())
