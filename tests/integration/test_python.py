"""python:MODULE:CALLABLE handlers in a real uWSGI: every event in every
process kind, threads on and off, lazy-apps on and off, either plugin
order; exceptions; start-up errors."""

import os

from harness import IntegrationCase, Uwsgi, core_threads_settled, read_jsonl, wait_for

HEAD = """
[uwsgi]
plugin-dir = {plugin_dir}
plugins = {plugins}
master = true
processes = 2
http-socket = 127.0.0.1:{port}
pidfile = {pidfile}
pythonpath = {app_dir}
wsgi-file = {app_dir}/simple_app.py
forksafe-settings = %p
"""


def head(plugins="python3,forksafe"):
    return HEAD.replace("{plugins}", plugins)


class PythonHandlerTest(IntegrationCase):

    def python_events(self, u):
        return read_jsonl(os.path.join(u.dir, "python.jsonl"))

    def test_every_event_in_every_process_kind_matrix(self):
        for plugins in ("python3,forksafe", "forksafe,python3"):
            for threads in (False, True):
                for lazy in (False, True):
                    with self.subTest(plugins=plugins, threads=threads, lazy=lazy):
                        self.run_matrix_cell(plugins, threads, lazy)

    def test_with_uwsgi_fork_hooks_called_from_python(self):
        # The python plugin then holds the GIL and the import lock around
        # worker forks.  No mule: with this option and threads, uWSGI 2.0.21
        # itself segfaults in every mule's post_fork, forksafe loaded or not.
        self.run_matrix_cell("python3,forksafe", True, False,
                             "py-call-uwsgi-fork-hooks = true\nforksafe-python-atfork = false\n",
                             kinds=("master", "worker"))

    def run_matrix_cell(self, plugins, threads, lazy, more="",
                        kinds=("master", "worker", "mule", "spooler")):
        extra = ("forksafe-subscribe = * dl:{recorder}:record\n"
                 "forksafe-subscribe = * python:handlers:record\n")
        if "mule" in kinds:
            extra += "mule = {app_dir}/mule_loop.py\nspooler = {dir}/spool\n"
        if threads:
            extra += "enable-threads = true\nthreads = 2\n"
        if lazy:
            extra += "lazy-apps = true\n"
        extra += more
        u = Uwsgi(self, head(plugins) + extra, settings={"python_log": "%(here)s/python.jsonl"})
        os.makedirs(os.path.join(u.dir, "spool"))
        # the same events, in the same order per process, with the same payload
        def per_process(events):
            out = {}
            for e in events:
                out.setdefault(e["process"]["pid"], []).append(
                    {k: v for k, v in e.items() if k != "time"})
            return out

        def native_events():
            return [e for e in u.events() if e["event"] != "app-loaded"]
        u.start(wait_ready=2)
        # Before the stop, every process must be past what the comparison
        # reads: the python handler runs after the native one, and a process
        # stopped between the two would miss it.  So: both workers' python
        # worker-ready, every child's post-fork and the master's
        # post-fork-parent for it, and nothing recorded natively that the
        # python handler has not recorded too.
        children = 2 + (2 if "mule" in kinds else 0)

        def settled():
            python = self.python_events(u)
            seen = [(e["process"]["kind"], e["event"]) for e in python]
            return ({k for k, _ in seen} >= set(kinds) and
                    seen.count(("worker", "worker-ready")) >= 2 and
                    len([k for k, e in seen if e == "post-fork"]) >= children and
                    seen.count(("master", "post-fork-parent")) >= children and
                    per_process(python) == per_process(native_events()))
        wait_for(settled, what="every process's native and python events, the same")
        self.assertTrue(u.get("/").isdigit())
        if threads:
            workers = [e["process"]["pid"] for e in native_events() if e["event"] == "worker-ready"]
            wait_for(lambda: core_threads_settled(workers),
                     what="every worker's core threads blocking signals")
        self.assertEqual(u.stop(), 0, u.log_text()[-3000:])
        native = native_events()
        python = self.python_events(u)
        self.assertEqual(per_process(python), per_process(native))
        seen = {(e["process"]["kind"], e["event"]) for e in python}
        for expected in [("master", "master-start"), ("master", "pre-fork"),
                         ("master", "post-fork-parent"), ("master", "master-exit"),
                         ("worker", "post-fork"), ("worker", "worker-ready"),
                         ("worker", "worker-exit"), ("mule", "post-fork"),
                         ("mule", "worker-exit"), ("spooler", "post-fork")]:
            if expected[0] in kinds:
                self.assertIn(expected, seen)
        self.assertEqual(python[0]["settings"]["python_log"],
                         os.path.join(u.dir, "python.jsonl"))

    def test_exception_traceback_is_one_record_and_policy_applies(self):
        u = Uwsgi(self, head() + "forksafe-subscribe = post-fork python:handlers:boom\n"
                  "forksafe-subscribe = worker-ready python:handlers:Nested.handler\n",
                  settings={"python_log": "%(here)s/python.jsonl"})
        u.start()
        wait_for(lambda: len(self.python_events(u)) >= 2, what="workers ready")
        self.assertTrue(u.get("/").isdigit())
        self.assertEqual(u.stop(), 0)
        log = u.log_text()
        # one record: the header line and the traceback lines follow each other
        self.assertRegex(log, r"\[forksafe\] handler 'python:handlers:boom' raised on post-fork "
                              r"in worker \d \(pid \d+\):\nTraceback \(most recent call last\):\n"
                              r"(.*\n)*?ValueError: boom on post-fork")
        self.assertRegex(log, r"handler 'python:handlers:boom' failed on post-fork in worker \d "
                              r"\(pid \d+\): ValueError: boom on post-fork")

    def test_exception_with_on_error_exit_respawns(self):
        u = Uwsgi(self, head().replace("processes = 2", "processes = 1") +
                  "forksafe-subscribe = worker-ready on-error=exit python:handlers:boom\n"
                  "forksafe-subscribe = worker-ready python:handlers:record\n"
                  "min-worker-lifetime = 0\nforkbomb-delay = 0\n",
                  settings={"python_log": "%(here)s/python.jsonl"})
        u.start()
        wait_for(lambda: u.log_text().count("ValueError: boom on worker-ready") >= 6,
                 what="three respawns")
        self.assertEqual(u.stop(), 0)

    def assert_refused(self, body, pattern, plugins="python3,forksafe", settings=None):
        u = Uwsgi(self, head(plugins) + body, settings=settings or {})
        status = u.run_to_exit()
        log = u.log_text()
        self.assertNotEqual(status, 0, log)
        self.assertNotIn("spawned uWSGI worker", log)
        self.assertRegex(log, r"\[forksafe\] %s:\d+: .*%s" % (u.ini, pattern))

    def test_missing_module_is_a_startup_error(self):
        self.assert_refused("forksafe-subscribe = post-fork python:no_such_module:fn\n",
                            r"ModuleNotFoundError: No module named 'no_such_module'")

    def test_missing_module_with_lazy_apps(self):
        self.assert_refused("lazy-apps = true\n"
                            "forksafe-subscribe = post-fork python:no_such_module:fn\n",
                            r"no Python module named 'no_such_module'")

    def test_missing_attribute_and_not_callable(self):
        self.assert_refused("forksafe-subscribe = post-fork python:handlers:nope\n",
                            r"AttributeError: .*nope")
        self.assert_refused("forksafe-subscribe = post-fork python:handlers:not_callable\n",
                            r"handlers.not_callable is not callable")

    def test_python_handler_without_python(self):
        body = HEAD.replace("{plugins}", "forksafe").replace(
            "wsgi-file = {app_dir}/simple_app.py\n", "").replace("pythonpath = {app_dir}\n", "")
        u = Uwsgi(self, body + "forksafe-subscribe = post-fork python:handlers:record\n",
                  settings={})
        self.assertNotEqual(u.run_to_exit(), 0)
        self.assertRegex(u.log_text(), r"\[forksafe\] .*:\d+: .*python: handlers need Python in "
                                       r"the process: load uWSGI's python plugin")
