"""generation-ready against a real uWSGI: once per generation, in the
master, when every worker of the generation has reached worker-ready; with
each worker's pid and the ms it took; again after a graceful reload and a
chain reload, never for a plain respawn."""

import os
import signal

from harness import UWSGI_HEAD, IntegrationCase, Uwsgi, wait_for

CONFIG = UWSGI_HEAD + """die-on-term = true
wsgi-file = {app_dir}/simple_app.py
forksafe-timeout = 120
forksafe-subscribe = * dl:{recorder}:record
"""

# Each worker's worker-ready waits for the test's word: the file `release`.
HOLD = ("forksafe-subscribe = worker-ready exec:"
        "while [ ! -e {dir}/release ]; do sleep 0.05; done\n")


def pids_of(events):
    return {e["process"]["id"]: e["process"]["pid"] for e in events}


def fifo_command(u, command):
    """Writes COMMAND to U's master FIFO (master-fifo = {dir}/fifo)."""
    path = os.path.join(u.dir, "fifo")
    wait_for(lambda: os.path.exists(path), what="the fifo")
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, command)
    finally:
        os.close(fd)


class GenerationReady(IntegrationCase):

    def start(self, extra="", ready=2):
        u = Uwsgi(self, CONFIG + extra, settings={})
        u.start(wait_ready=ready)
        return u

    def wait_generations(self, u, count):
        wait_for(lambda: len(u.events("generation-ready")) >= count,
                 what="%d generation-ready" % count)
        return u.events("generation-ready")

    def assert_all_new(self, first, second):
        """No worker of generation-ready SECOND was one of FIRST's."""
        self.assertFalse({w["pid"] for w in first["workers"]}
                         & {w["pid"] for w in second["workers"]})

    def assert_ready_payload(self, u, event, generation, pids):
        """EVENT lists exactly PIDS ({id: pid}), in the master, with sane ms."""
        self.assertEqual(event["process"]["kind"], "master")
        self.assertEqual(event["process"]["pid"], u.master_pid)
        self.assertEqual(event["generation"], generation)
        self.assertNotIn("child", event)
        self.assertNotIn("reason", event)
        workers = event["workers"]
        self.assertEqual([w["id"] for w in workers], sorted(pids))
        self.assertEqual({w["id"]: w["pid"] for w in workers}, pids)
        self.assertIsInstance(event["elapsed_ms"], int)
        for w in workers:
            self.assertEqual(set(w), {"id", "pid", "ms"})
            self.assertIsInstance(w["ms"], int)
            self.assertGreaterEqual(w["ms"], 0)
            self.assertLessEqual(w["ms"], event["elapsed_ms"])

    def test_once_with_every_worker_never_for_a_respawn(self):
        u = self.start("processes = 3\nmule = {app_dir}/mule_loop.py\n", ready=3)
        first = self.wait_generations(u, 1)[0]
        ready = u.events("worker-ready")
        self.assert_ready_payload(u, first, 0, pids_of(ready))
        # after every worker's worker-ready, in the record too
        names = [e["event"] for e in u.events()]
        self.assertGreater(names.index("generation-ready"),
                           max(i for i, n in enumerate(names) if n == "worker-ready"))
        # A plain respawn is no new generation.  Then the mule's death: the
        # master's scan that reports it looks at the generation too, with
        # the replacement ready; the new mule's birth comes a scan later.
        os.kill(pids_of(ready)[2], signal.SIGKILL)
        wait_for(lambda: len(u.events("worker-ready")) >= 4, what="the respawned worker ready")
        mule = [e for e in u.events("post-fork") if e["process"]["kind"] == "mule"][0]
        os.kill(mule["process"]["pid"], signal.SIGKILL)
        wait_for(lambda: len([e for e in u.events("post-fork-parent")
                              if e["child"]["kind"] == "mule"]) >= 2,
                 what="the mule respawned")
        self.assertEqual(len(u.events("generation-ready")), 1)
        self.assertEqual(u.stop(), 0)
        self.assertEqual(len(u.events("generation-ready")), 1)

    def test_graceful_reload_is_the_next_generation(self):
        u = self.start()
        first = self.wait_generations(u, 1)[0]
        u.send_signal(signal.SIGHUP)
        second = self.wait_generations(u, 2)[1]
        new_ready = [e for e in u.events("worker-ready") if e["generation"] == 1]
        self.assertEqual(len(new_ready), 2)
        self.assert_ready_payload(u, second, 1, pids_of(new_ready))
        self.assert_all_new(first, second)
        self.assertEqual(u.stop(), 0)
        self.assertEqual(len(u.events("generation-ready")), 2)

    def test_chain_reload_replaces_every_worker(self):
        u = self.start("master-fifo = {dir}/fifo\n")
        first = self.wait_generations(u, 1)[0]
        fifo_command(u, b"c")
        second = self.wait_generations(u, 2)[1]
        ready = u.events("worker-ready")
        self.assertEqual(len(ready), 4, "generation-ready before the chain ended")
        # the same master: uWSGI's reload count, every payload's generation, stays
        self.assert_ready_payload(u, second, 0, pids_of(ready[2:]))
        self.assert_all_new(first, second)
        self.assertGreaterEqual(second["elapsed_ms"], first["elapsed_ms"])
        self.assertEqual(u.stop(), 0)
        self.assertEqual(len(u.events("generation-ready")), 2)

    def test_workers_reload_replaces_every_worker(self):
        # FIFO `w`: every worker told to leave, the master stays
        u = self.start("master-fifo = {dir}/fifo\n")
        first = self.wait_generations(u, 1)[0]
        fifo_command(u, b"w")
        second = self.wait_generations(u, 2)[1]
        ready = u.events("worker-ready")
        self.assertEqual(len(ready), 4)
        self.assert_ready_payload(u, second, 0, pids_of(ready[2:]))
        self.assert_all_new(first, second)
        self.assertEqual(u.stop(), 0)
        self.assertEqual(len(u.events("generation-ready")), 2)

    def test_cheaper_counts_the_workers_alive(self):
        u = self.start("processes = 4\ncheaper = 1\ncheaper-initial = 2\n")
        event = self.wait_generations(u, 1)[0]
        ready = u.events("worker-ready")
        self.assertEqual(len(ready), 2)
        self.assert_ready_payload(u, event, 0, pids_of(ready))
        self.assertEqual(u.stop(), 0)

    def test_lazy_apps(self):
        u = self.start("lazy-apps = true\n")
        event = self.wait_generations(u, 1)[0]
        self.assert_ready_payload(u, event, 0, pids_of(u.events("worker-ready")))
        self.assertEqual(u.stop(), 0)

    def test_a_reload_under_lazy_replaces_every_worker(self):
        # `lazy`: a SIGHUP replaces the workers, the master stays
        u = self.start("lazy = true\n")
        first = self.wait_generations(u, 1)[0]
        u.send_signal(signal.SIGHUP)
        second = self.wait_generations(u, 2)[1]
        ready = u.events("worker-ready")
        self.assertEqual(len(ready), 4)
        self.assert_ready_payload(u, second, 0, pids_of(ready[2:]))
        self.assert_all_new(first, second)
        self.assertEqual(u.stop(), 0)
        self.assertEqual(len(u.events("generation-ready")), 2)

    def test_a_worker_killed_before_ready_is_waited_for_in_its_replacement(self):
        u = self.start(HOLD)  # both worker-ready recorded, both handlers waiting
        held = pids_of(u.events("worker-ready"))
        os.kill(held[2], signal.SIGKILL)
        wait_for(lambda: len(u.events("worker-ready")) >= 3, what="worker 2's replacement")
        replacement = u.events("worker-ready")[2]["process"]
        self.assertEqual(replacement["id"], 2)
        self.assertEqual(u.events("generation-ready"), [])
        open(os.path.join(u.dir, "release"), "w").close()
        event = self.wait_generations(u, 1)[0]
        self.assert_ready_payload(u, event, 0, {1: held[1], 2: replacement["pid"]})
        self.assertEqual(u.stop(), 0)
        self.assertEqual(len(u.events("generation-ready")), 1)


if __name__ == "__main__":
    import unittest
    unittest.main()
