"""pyramid_forksafe under a real uWSGI: including the package is enough."""

import os

from harness import IntegrationCase, ROOT, Uwsgi, read_jsonl, wait_for, workers_accepting

HEAD = """
[uwsgi]
plugin-dir = {plugin_dir}
plugins = {plugins}
master = true
processes = 2
http-socket = 127.0.0.1:{port}
pidfile = {pidfile}
pythonpath = {app_dir}
pp = %(python_dir)s
"""

PASTE = """paste = config:%p
forksafe-subscribe = * dl:{recorder}:record
"""

APP = """
[app:main]
use = call:pyramid_app:main
title = paste app
pyramid_log = %(here)s/pyramid.jsonl
forksafe.event_log = %(here)s/events.jsonl
"""


class PyramidTest(IntegrationCase):

    def make(self, plugins="python3,forksafe", body=PASTE, app=APP):
        text = HEAD.replace("{plugins}", plugins).replace(
            "%(python_dir)s", os.path.join(ROOT, "python")) + body
        return Uwsgi(self, text, extra_sections=app)

    def pyramid_events(self, u):
        return read_jsonl(os.path.join(u.dir, "pyramid.jsonl"))

    def wait_workers(self, u, count=2):
        wait_for(lambda: len([e for e in self.pyramid_events(u)
                              if e["class"] == "ApplicationPostWorkerInit"]) >= count,
                 what="%d ApplicationPostWorkerInit" % count)

    def test_subscribers_hear_every_event_with_the_payload(self):
        u = self.make()
        u.start()
        self.wait_workers(u)
        wait_for(lambda: u.events("generation-ready"), what="generation-ready")
        self.assertTrue(u.get("/").isdigit())
        self.assertEqual(u.stop(), 0, u.log_text()[-3000:])
        pyramid = self.pyramid_events(u)
        native = u.events()
        # the app loads in the master before master-start: it hears everything
        def per_process(pairs):
            out = {}
            for pid, name in pairs:
                out.setdefault(pid, []).append(name)
            return out
        self.assertEqual(per_process((e["pid"], e["payload"]["event"]) for e in pyramid),
                         per_process((e["process"]["pid"], e["event"]) for e in native))
        classes = {e["class"] for e in pyramid}
        self.assertEqual(classes, {"ApplicationMasterStart", "ApplicationPreFork",
                                   "ApplicationPostFork", "ApplicationPostForkParent",
                                   "ApplicationPostWorkerInit", "ApplicationWorkerExit",
                                   "ApplicationMasterExit", "ApplicationGenerationReady"})
        self.assertTrue(all(e["payload"]["settings"]["title"] == "paste app" for e in pyramid))
        self.assertTrue(all(e["title"] == "paste app" for e in pyramid))
        self.assertFalse(any(e["replayed"] for e in pyramid))

    def test_lazy_apps_replays_post_fork(self):
        u = self.make(body=PASTE + "lazy-apps = true\n")
        u.start()
        self.wait_workers(u)
        self.assertEqual(u.stop(), 0)
        pyramid = self.pyramid_events(u)
        for pid in {e["pid"] for e in pyramid}:
            seq = [(e["class"], e["replayed"]) for e in pyramid if e["pid"] == pid]
            self.assertEqual(seq, [("ApplicationPostFork", True),
                                   ("ApplicationPostWorkerInit", False),
                                   ("ApplicationWorkerExit", False)])
        # the app never loaded in the master
        self.assertNotIn(u.master_pid, {e["pid"] for e in pyramid})

    def test_pyramid_includes_setting_enables_it(self):
        app = APP + "include_explicitly = false\npyramid.includes = pyramid_forksafe\n"
        u = self.make(app=app)
        u.start()
        self.wait_workers(u)
        self.assertEqual(u.stop(), 0)
        self.assertIn("ApplicationPostFork", {e["class"] for e in self.pyramid_events(u)})

    def test_several_apps_in_one_process(self):
        body = ("wsgi-file = {app_dir}/two_apps.py\n"
                "env = PYRAMID_LOG={dir}/pyramid.jsonl\n")
        u = self.make(body=body, app="")
        u.start()
        wait_for(lambda: len([e for e in self.pyramid_events(u)
                              if e["class"] == "ApplicationPostWorkerInit"]) >= 4,
                 what="both apps in both workers")
        self.assertEqual(u.stop(), 0)
        pyramid = self.pyramid_events(u)
        for label, title in (("first", "one"), ("second", "two")):
            mine = [e for e in pyramid if e["app"] == label]
            self.assertEqual({e["title"] for e in mine}, {title})
            self.assertEqual(len([e for e in mine if e["class"] == "ApplicationPostFork"]), 2)

    def test_without_the_plugin_falls_back_to_uwsgidecorators(self):
        u = self.make(plugins="python3", body="paste = config:%p\nstats = {dir}/stats.sock\n")
        u.start()
        wait_for(lambda: len([e for e in self.pyramid_events(u)
                              if e["class"] == "ApplicationPostFork"]) >= 2,
                 what="fallback post-fork in both workers")
        # Plain uWSGI loses a stop that reaches a worker still inside its
        # post-fork hooks (the subscriber above runs in one): wait until
        # uWSGI has started both workers.
        wait_for(lambda: workers_accepting(os.path.join(u.dir, "stats.sock"), 2),
                 what="both workers accepting (uWSGI stats)")
        self.assertEqual(u.stop(), 0)
        self.assertEqual({e["class"] for e in self.pyramid_events(u)}, {"ApplicationPostFork"})
        self.assertRegex(u.log_text(), r"(?i)warning.*pyramid_forksafe|pyramid_forksafe.*"
                                       r"(uwsgidecorators|fall)")
