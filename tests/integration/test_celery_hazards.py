"""Fork hazards under a real Celery worker (prefork pool, redis-server
broker), as test_hazards.py shows them under uWSGI: what a pool process is
about to inherit from the worker's main process and must not share.

A task module (apps/hazard_tasks.py) that connects at import to a listener
of this test, and starts a thread: each pool process is told, once, which
descriptor and which thread it inherits; the pre-fork payload has them.
With hazards = "fail" the worker exits non-zero before any pool process is
forked; a hazard that appears once pool processes run (a pre-fork handler
that connects before a respawn) stops the worker with status 1, and no pool
process starts on it.  A plain worker says nothing
(test_celery.py's test_a_plain_worker_has_no_fork_hazard).
"""
import os
import re
import signal
import socket
import unittest

from test_celery import CeleryCase

TCP_LINE = (r"\[forksafe\] worker (\d) will inherit fd (\d+): TCP 127\.0\.0\.1:(\d+) -> "
            r"127\.0\.0\.1:%d, opened by the master \(pid %d\)")
THREAD_LINE = (r"\[forksafe\] worker (\d) is forked while thread 'metrics-exporter' "
               r"\(tid (\d+)\) runs in the master \(pid %d\)")


class CeleryHazardCase(CeleryCase):

    def setUp(self):
        super().setUp()
        # What the application connects to: a listener that accepts (the
        # kernel's backlog does) and never answers.
        self.listener = socket.socket()
        self.addCleanup(self.listener.close)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener_port = self.listener.getsockname()[1]

    def env(self, **extra):
        env = {"HAZARD_LISTENER": "127.0.0.1:%d" % self.listener_port}
        env.update(extra)
        return env

    def assert_no_pool_process(self, w):
        self.assertEqual([e["event"] for e in w.events() if e["process"]["pid"] != w.pid], [])
        self.assertEqual(w.events("post-fork-parent"), [])
        self.assertNotIn("ForkPoolWorker", w.log_text())


class TestWarn(CeleryHazardCase):

    def test_a_task_modules_connection_and_thread_are_said_for_each_pool_process(self):
        w = self.worker(env=self.env(CELERY_APP_IMPORTS="hazard_tasks",
                                     HAZARD_THREAD="metrics-exporter"))
        w.wait_ready(2)
        w.wait_consumer_ready()
        self.assertEqual(w.stop(), 0, w.log_text()[-3000:])
        log = w.log_text()
        sockets = re.findall(TCP_LINE % (self.listener_port, w.pid), log)
        self.assertEqual(sorted(int(n) for n, _, _ in sockets), [1, 2], log[-4000:])
        self.assertEqual(len({(fd, port) for _, fd, port in sockets}), 1, sockets)
        threads = re.findall(THREAD_LINE % w.pid, log)
        self.assertEqual(sorted(int(n) for n, _ in threads), [1, 2], log[-4000:])
        print("\n  " + re.search(r"\[forksafe\] worker 1 will inherit.*", log).group(0))
        # the pre-fork payload has them, for handlers to act on
        _, fd, port = sockets[0]
        tid = int(threads[0][1])
        for e in w.events("pre-fork"):
            self.assertEqual(e["hazards"], [
                {"kind": "thread", "tid": tid, "name": "metrics-exporter", "allowed": False},
                {"kind": "tcp", "fd": int(fd), "local": "127.0.0.1:%s" % port,
                 "peer": "127.0.0.1:%d" % self.listener_port, "service": None,
                 "allowed": False}], e)

    def test_allowed_hazards_are_not_said(self):
        w = self.worker(env=self.env(
            CELERY_APP_IMPORTS="hazard_tasks", HAZARD_THREAD="metrics-exporter",
            CELERY_APP_HAZARD_ALLOW="tcp:127.0.0.1:%d\nthread:metrics-*" % self.listener_port))
        w.wait_ready(2)
        w.wait_consumer_ready()
        self.assertEqual(w.stop(), 0, w.log_text()[-3000:])
        self.assertNotIn("will inherit", w.log_text())
        self.assertNotIn("is forked while", w.log_text())
        for e in w.events("pre-fork"):
            self.assertEqual(sorted((h["kind"], h["allowed"]) for h in e["hazards"]),
                             [("tcp", True), ("thread", True)], e)


class TestFail(CeleryHazardCase):

    def test_fail_exits_before_any_pool_process(self):
        w = self.worker(env=self.env(CELERY_APP_IMPORTS="hazard_tasks",
                                     CELERY_APP_HAZARDS="fail"))
        status = w.wait()
        log = w.log_text()
        self.assertEqual(status, 1, log[-4000:])
        self.assertIn("[forksafe] forksafe-hazards = fail: the worker refuses to fork pool "
                      "process 1 with 1 hazard (above); exiting", log)
        self.assertRegex(log, TCP_LINE % (self.listener_port, w.pid))
        self.assert_no_pool_process(w)
        self.assertEqual([e["event"] for e in w.events()],
                         ["master-start", "pre-fork", "master-exit"])

    def test_a_hazard_that_appears_later_stops_the_worker(self):
        # A pre-fork handler connects the main process to the listener before
        # the first respawn: pool processes run by then.
        w = self.worker(env=self.env(
            CELERY_APP_HAZARDS="fail",
            CELERY_APP_SUBSCRIBE="pre-fork python:hazard_handlers:connect_on_respawn"))
        w.wait_ready(2)
        w.wait_consumer_ready()
        victim = w.events("post-fork")[0]["process"]
        w.wait_child_recorded(victim["pid"])
        os.kill(victim["pid"], signal.SIGKILL)
        status = w.wait()
        log = w.log_text()
        self.assertEqual(status, 1, log[-4000:])
        self.assertIn("[forksafe] forksafe-hazards = fail: 1 hazard appeared (above); "
                      "stopping the worker", log)
        self.assertRegex(log, TCP_LINE % (self.listener_port, w.pid))
        # the respawn's pre-fork, whose handler opened the connection (its
        # payload has what was there before: the broker's, allowed)
        last = w.events("pre-fork")[-1]
        self.assertEqual((last["child"]["id"], last["child"]["respawn"]), (victim["id"], 1))
        self.assertTrue(all(h["allowed"] for h in last["hazards"]), last["hazards"])
        # No pool process started on it.  Under the event loop the main process
        # forks in its one thread, where Celery's SIGTERM handler raises at
        # once: the respawn is not forked at all.  Where billiard's supervisor
        # thread forks, the child exits at once (python/tests/test_hazards.py).
        refused = [e["child"]["pid"] for e in w.events("post-fork-parent")
                   if e["child"]["respawn"] > 0]
        for pid in refused:
            self.assertIn("[forksafe] worker %d (pid %d) forked with fork hazards exits "
                          "(forksafe-hazards = fail)" % (victim["id"], pid), log)
            self.assertEqual([e for e in w.events() if e["process"]["pid"] == pid], [])
        names = [e["event"] for e in w.events() if e["process"]["pid"] == w.pid]
        self.assertEqual(names[-1], "master-exit")


if __name__ == "__main__":
    unittest.main()
