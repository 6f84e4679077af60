"""Every fork named right: the master's forks for exec hooks and daemons are
neither a mule's nor a spooler's, and nothing is forked before master-start.
(forksafe tells a mule's or a spooler's fork by uwsgi_mule() or
spooler_start() being on the forking thread's stack.)"""

import os
import signal

from harness import UWSGI_HEAD, IntegrationCase, Uwsgi, wait_for

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
                 {("worker", 1), ("worker", 2), ("mule", 1), ("spooler", 1)},
                 what="the master's post-fork-parent for every child")
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
