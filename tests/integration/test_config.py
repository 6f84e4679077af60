"""Configuration against a real uWSGI: handler kinds, the [forksafe] section,
paste files, forksafe-check, and every config error stopping the instance
before any fork with FILE:LINE."""

import json
import os
import re

from harness import RECORDER, IntegrationCase, Uwsgi, wait_for, workers_accepting

HEAD = """
[uwsgi]
plugin-dir = {plugin_dir}
plugins = python3,forksafe
master = true
processes = 1
http-socket = 127.0.0.1:{port}
pidfile = {pidfile}
wsgi-file = {app_dir}/simple_app.py
"""


class ConfigErrorTest(IntegrationCase):
    """Each case: non-zero exit, no worker forked, one [forksafe] FILE:LINE: line."""

    def assert_refused(self, body, pattern, settings=None, extra="", line_of=None):
        u = Uwsgi(self, HEAD + body, settings=settings, extra_sections=extra)
        status = u.run_to_exit()
        log = u.log_text()
        self.assertNotEqual(status, 0, log)
        self.assertNotIn("spawned uWSGI worker", log)
        self.assertNotIn("spawned uWSGI mule", log)
        errors = [l for l in log.splitlines() if l.startswith("[forksafe] ")]
        self.assertTrue(errors, log)
        self.assertRegex(errors[-1], pattern)
        if line_of is not None:
            with open(u.ini) as f:
                lines = f.read().splitlines()
            expected = next(i + 1 for i, l in enumerate(lines) if line_of in l)
            self.assertIn("%s:%d:" % (u.ini, expected), errors[-1])
        return errors[-1]

    def test_unknown_event_names_file_line_and_suggests(self):
        self.assert_refused("forksafe-subscribe = post_fork exec:true\n",
                            r"unknown event 'post_fork'.*post-fork", line_of="post_fork")

    def test_unknown_handler_kind(self):
        self.assert_refused("forksafe-subscribe = post-fork shell:true\n",
                            r"handler kind", line_of="shell:true")

    def test_missing_library(self):
        self.assert_refused("forksafe-subscribe = post-fork dl:/nonexistent/lib.so:fn\n",
                            r"/nonexistent/lib.so", line_of="/nonexistent/lib.so")

    def test_missing_symbol(self):
        self.assert_refused("forksafe-subscribe = post-fork dl:{recorder}:no_such_fn\n",
                            r"no_such_fn", line_of="no_such_fn")

    def test_symbol_not_in_process(self):
        self.assert_refused("forksafe-subscribe = post-fork symbol:no_such_symbol_anywhere\n",
                            r"no_such_symbol_anywhere")

    def test_unknown_hook_action(self):
        self.assert_refused("forksafe-subscribe = post-fork hook:nosuchaction:x\n",
                            r"nosuchaction")

    def test_bad_policy_and_timeout(self):
        self.assert_refused("forksafe-on-error = explode\n", r"log, exit or fatal",
                            line_of="explode")
        self.assert_refused("forksafe-timeout = soon\n", r"forksafe-timeout",
                            line_of="soon")

    def test_missing_settings_file(self):
        self.assert_refused("forksafe-settings = /nonexistent/production.ini\n",
                            r"/nonexistent/production.ini")

    def test_missing_section(self):
        self.assert_refused("forksafe-settings = %p#other\n", r"app:other",
                            settings={"a": "1"})

    def test_interpolation_loop(self):
        self.assert_refused("forksafe-settings = %p\n", r"(?i)interpolat.*(loop|recursion|depth)",
                            settings={"a": "%(b)s", "b": "%(a)s"})

    def test_duplicate_key_in_app_section(self):
        u_extra = "\n[app:main]\nx = 1\nx = 2\n"
        self.assert_refused("forksafe-settings = %p\n", r"(?i)duplicate.*'x'", extra=u_extra)

    def test_paste_file_pastedeploy_would_refuse(self):
        # a repeated key in [uwsgi] is fine for uWSGI, fatal for PasteDeploy
        body = ("paste = config:%p\n"
                "forksafe-subscribe = post-fork exec:true\n"
                "forksafe-subscribe = worker-exit exec:true\n")
        extra = "\n[app:main]\nuse = call:simple_app:make_app\n"
        u = Uwsgi(self, HEAD.replace("wsgi-file = {app_dir}/simple_app.py\n",
                                     "pythonpath = {app_dir}\n") + body, extra_sections=extra)
        status = u.run_to_exit()
        log = u.log_text()
        self.assertNotEqual(status, 0, log)
        self.assertNotIn("spawned uWSGI worker", log)
        self.assertRegex(log, r"\[forksafe\] %s:\d+: .*forksafe-subscribe.*PasteDeploy"
                         % re.escape(u.ini))

    def test_bad_forksafe_section_entry(self):
        extra = "\n[forksafe]\npost-fork =\n    exec:true\n    bogus:thing\n"
        self.assert_refused("forksafe-settings = %p\n", r"bogus", settings={"a": "1"},
                            extra=extra, line_of="bogus:thing")

    def test_bad_json_settings(self):
        u = Uwsgi(self, HEAD + "forksafe-settings = {dir}/settings.json\n")
        with open(os.path.join(u.dir, "settings.json"), "w") as f:
            f.write('{"a": "1",\n "b": }\n')
        status = u.run_to_exit()
        self.assertNotEqual(status, 0)
        self.assertRegex(u.log_text(), r"settings\.json:2")

    def test_check_reports_invalid_with_status_1(self):
        u = Uwsgi(self, HEAD + "forksafe-subscribe = nope exec:true\n")
        self.assertEqual(u.run_to_exit(args=["--forksafe-check"]), 1)
        self.assertIn("unknown event 'nope'", u.log_text())


class ConfigTest(IntegrationCase):

    def test_check_prints_table_redacted_and_exits_0(self):
        u = Uwsgi(self, HEAD + "forksafe-settings = %p\n"
                  "forksafe-subscribe = post-fork,worker-exit kind=worker exec:true\n"
                  "forksafe-check = true\n",
                  settings={"db.password": "hunter2", "url": "postgresql://u:pw123@h/db",
                            "plain": "visible"})
        self.assertEqual(u.run_to_exit(), 0, u.log_text())
        log = u.log_text()
        self.assertIn("exec:true", log)
        self.assertIn("visible", log)
        self.assertNotIn("hunter2", log)
        self.assertNotIn("pw123", log)
        self.assertNotIn("spawned uWSGI worker", log)

    def test_exec_handler_gets_payload_on_stdin_and_env(self):
        u = Uwsgi(self, HEAD + "forksafe-settings = %p\n"
                  "forksafe-subscribe = post-fork,worker-ready exec:"
                  "{{ cat; echo; echo \"$FORKSAFE_EVENT $FORKSAFE_PROCESS $FORKSAFE_ID\"; }}"
                  " > {dir}/out.$FORKSAFE_EVENT.$$\n",
                  settings={"token": "abc"})
        u.start()

        def worker_ready_output_complete():
            for name in os.listdir(u.dir):
                if name.startswith("out.worker-ready"):
                    with open(os.path.join(u.dir, name)) as f:
                        if f.read().endswith("\nworker-ready worker 1\n"):
                            return True
            return False
        # the file exists as soon as the shell opened it: wait for its last line
        wait_for(worker_ready_output_complete, what="the worker-ready exec handler's output")
        self.assertEqual(u.stop(), 0)
        out = [f for f in os.listdir(u.dir) if f.startswith("out.post-fork")]
        self.assertEqual(len(out), 1)
        with open(os.path.join(u.dir, out[0])) as f:
            payload_line, env_line = f.read().splitlines()[:2]
        payload = json.loads(payload_line)
        self.assertEqual(payload["event"], "post-fork")
        self.assertEqual(payload["settings"]["token"], "abc")
        self.assertEqual(env_line, "post-fork worker 1")

    def test_hook_handler_and_forksafe_section_with_paste(self):
        body = ("paste = config:%p\npythonpath = {app_dir}\n"
                "forksafe-subscribe = worker-ready hook:print:directive runs after section\n")
        extra = """
[app:main]
use = call:simple_app:make_app
forksafe.event_log = {record}

[forksafe]
post-fork =
    hook:print:section post-fork for %(here)s
    dl:{recorder}:record
worker-ready = dl:{recorder}:record
"""
        u = Uwsgi(self, HEAD.replace("wsgi-file = {app_dir}/simple_app.py\n", "") + body,
                  extra_sections=extra)
        u.start(wait_ready=1)
        wait_for(lambda: "directive runs after section" in u.log_text(), what="hook print")
        self.assertEqual(u.stop(), 0)
        log = u.log_text()
        self.assertIn("section post-fork for %s" % u.dir, log)
        names = [e["event"] for e in u.events()]
        self.assertEqual(names, ["post-fork", "worker-ready"])
        self.assertEqual(u.events()[0]["settings"]["forksafe.event_log"], u.record)
        self.assertNotIn("use", u.events()[0]["settings"])

    def test_filters_once_and_overrides(self):
        u = Uwsgi(self, HEAD.replace("processes = 1", "processes = 3") +
                  "forksafe-settings = %p\n"
                  "forksafe-set = extra=from-directive\n"
                  "forksafe-subscribe = post-fork id=2 dl:{recorder}:record\n"
                  "forksafe-subscribe = worker-ready once dl:{recorder}:record\n"
                  "stats = {dir}/stats.sock\n",
                  settings={"extra": "from-file"})
        u.start()
        # `once` is only tested if all 3 workers got past worker-ready: uWSGI
        # sets a worker's `accepting` after the plugins' hijack_worker, which
        # is where forksafe dispatches worker-ready.
        wait_for(lambda: workers_accepting(os.path.join(u.dir, "stats.sock"), 3),
                 what="3 workers past worker-ready (accepting, in uWSGI's stats)")
        self.assertEqual(u.stop(), 0)
        forks = u.events("post-fork")
        self.assertEqual([e["process"]["id"] for e in forks], [2])
        self.assertEqual(len(u.events("worker-ready")), 1)
        self.assertEqual(forks[0]["settings"]["extra"], "from-directive")

    def test_on_error_exit_respawns_the_worker(self):
        u = Uwsgi(self, HEAD + "forksafe-settings = %p\n"
                  "forksafe-subscribe = worker-ready dl:{recorder}:record\n"
                  "forksafe-subscribe = worker-ready on-error=exit dl:{failing}:fail\n"
                  "min-worker-lifetime = 0\nforkbomb-delay = 0\n",
                  settings={})
        u.start()
        wait_for(lambda: len(u.events("worker-ready")) >= 3, what="worker respawned 3 times")
        self.assertEqual(u.stop(), 0)
        log = u.log_text()
        self.assertIn("handler 'dl:", log)
        self.assertIn("fail: failing on purpose", log)
        self.assertGreaterEqual(len(set(e["process"]["pid"] for e in u.events("worker-ready"))), 3)

    def test_on_error_fatal_stops_the_instance(self):
        u = Uwsgi(self, HEAD + "forksafe-settings = %p\n"
                  "forksafe-on-error = fatal\n"
                  "forksafe-subscribe = worker-ready dl:{failing}:fail\n",
                  settings={})
        status = u.run_to_exit(timeout=60)
        log = u.log_text()
        self.assertIn("on-error=fatal", log)
        self.assertIn("spawned uWSGI worker 1", log)
        del status  # uWSGI exits 0 or 1 after SIGINT depending on version: stopping is the point

    def test_on_error_log_keeps_serving(self):
        u = Uwsgi(self, HEAD + "forksafe-settings = %p\n"
                  "forksafe-subscribe = post-fork dl:{failing}:fail\n",
                  settings={})
        u.start()
        wait_for(lambda: "failing on purpose" in u.log_text(), what="failure logged")
        self.assertTrue(u.get("/").isdigit())
        self.assertEqual(u.stop(), 0)
        self.assertRegex(u.log_text(), r"handler '.*fail' failed on post-fork in worker 1 \(pid \d+\)")


class HandlerKindsTest(IntegrationCase):

    def test_symbol_handler_already_in_the_process(self):
        # LD_PRELOAD puts the handler library in the process, as an embedded
        # build links it in: symbol: finds it without any path.
        u = Uwsgi(self, HEAD + "forksafe-settings = %p\n"
                  "forksafe-subscribe = post-fork,worker-ready symbol:record\n", settings={})
        env = dict(os.environ, LD_PRELOAD=RECORDER)
        u.start(env=env, wait_ready=1)
        self.assertEqual(u.stop(), 0)
        self.assertEqual([e["event"] for e in u.events()], ["post-fork", "worker-ready"])

    def test_exec_timeout_kills_the_handler_and_its_children(self):
        u = Uwsgi(self, HEAD + "forksafe-settings = %p\n"
                  "forksafe-timeout = 1\n"
                  "forksafe-subscribe = post-fork exec:sleep 300 & echo $! > {dir}/bg.pid; "
                  "sleep 300\n"
                  "forksafe-subscribe = worker-ready dl:{recorder}:record\n", settings={})
        u.start(wait_ready=1)
        self.assertTrue(u.get("/").isdigit())
        self.assertEqual(u.stop(), 0)
        self.assertRegex(u.log_text(), r"handler 'exec:sleep 300.*' failed on post-fork in "
                                       r"worker 1 \(pid \d+\): timed out after 1")
        with open(os.path.join(u.dir, "bg.pid")) as f:
            background = int(f.read())

        def background_state():
            try:
                with open("/proc/%d/stat" % background) as f:
                    return f.read().rsplit(")", 1)[1].split()[0]
            except FileNotFoundError:
                return "gone"
        # SIGKILL is delivered when the victim next runs: on a busy machine
        # the killed child may take a moment to die.  It was killed at the
        # timeout; had it been missed, `sleep 300` outlives this wait.
        try:
            wait_for(lambda: background_state() in ("gone", "Z"),
                     what="the handler's background child dead")
        except AssertionError:
            pass  # the assertion below says what survived
        state = background_state()
        # a zombie waiting for init to reap it is dead too
        self.assertIn(state, ("gone", "Z"), "the handler's background child survived")

    def test_verbose_logs_each_dispatch_with_duration(self):
        u = Uwsgi(self, HEAD + "forksafe-settings = %p\nforksafe-verbose = true\n"
                  "forksafe-subscribe = post-fork dl:{recorder}:record\n", settings={})
        u.start()
        verbose = r"\[forksafe\] .*post-fork.*worker 1.*\d+(\.\d+)? ms"
        # the dispatch is logged after the handler (which records the event) returns
        wait_for(lambda: u.events("post-fork") and re.search(verbose, u.log_text()),
                 what="post-fork dispatched and logged")
        self.assertEqual(u.stop(), 0)
        self.assertRegex(u.log_text(), verbose)
