"""uWSGI set-ups that cannot work stop at start-up with one line, before any
worker forks: a plugin built for another uWSGI layout, and
py-call-osafterfork on a Python that aborts every worker for it.
(A plugin built for another uWSGI version: tests/matrix/test_abi.py.)"""

import os
import re
import subprocess
import sys

from harness import BUILD, UWSGI, UWSGI_HEAD, IntegrationCase, Uwsgi

OTHER_LAYOUT = os.path.join(BUILD, "fixtures", "other-layout", "forksafe_plugin.so")

BASE = UWSGI_HEAD + """pythonpath = {app_dir}
wsgi-file = {app_dir}/simple_app.py
forksafe-settings = %p
forksafe-subscribe = * dl:{recorder}:record
"""


def uwsgi_cflags():
    return subprocess.run([UWSGI, "--cflags"], stdout=subprocess.PIPE,
                          universal_newlines=True, check=True).stdout


class OtherLayout(IntegrationCase):

    def test_plugin_built_with_other_options_is_refused(self):
        if not re.search(r"-DUWSGI_SSL\b", uwsgi_cflags()):
            self.skipTest("this uWSGI is built without UWSGI_SSL: the fixture has its layout")
        version = re.match(r"\d+\.\d+\.\d+", subprocess.run(
            [UWSGI, "--version"], stdout=subprocess.PIPE, universal_newlines=True).stdout).group(0)
        proc = subprocess.run([UWSGI, "--plugin", OTHER_LAYOUT, "--master", "--forksafe-check"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, timeout=60)
        output = proc.stdout.decode(errors="replace")
        self.assertEqual(proc.returncode, 1, output)
        lines = [line for line in output.splitlines() if line.startswith("[forksafe]")]
        self.assertEqual(len(lines), 1, output)
        self.assertRegex(lines[0], r"^\[forksafe\] %s was built for a uWSGI %s whose "
                         r"`struct uwsgi_server` has (\d+) bytes, and in this one it has "
                         r"(?!\1\b)\d+ \(built with other options\); .* rebuild it against this "
                         r"uWSGI \(`make UWSGI=/\S+` in forksafe's source\)"
                         % (re.escape(OTHER_LAYOUT), re.escape(version)))


class OsAfterFork(IntegrationCase):
    """py-call-osafterfork alone: PyOS_AfterFork_Child() in each new worker
    without PyOS_BeforeFork() in the master, which Python 3.13 and later
    answer with an abort (unbit/uwsgi#2710).  The tests run with the Python
    the python3 plugin embeds (/usr/bin/python3 of the same release)."""

    def test_alone(self):
        # forksafe's own semantics off: with them on (the default) the
        # option is taken over instead (test_python_atfork)
        u = Uwsgi(self, BASE + "py-call-osafterfork = true\nforksafe-python-atfork = false\n",
                  settings={})
        if sys.version_info >= (3, 13):
            status = u.run_to_exit(timeout=60)
            log = u.log_text()
            self.assertEqual(status, 1, log[-3000:])
            with open(u.ini) as f:
                line = [n for n, text in enumerate(f, 1) if "py-call-osafterfork" in text][0]
            self.assertRegex(log, r"\[forksafe\] %s:%d: py-call-osafterfork makes Python 3\.\d+ "
                             r"abort every worker at fork .*py-call-uwsgi-fork-hooks = true"
                             % (re.escape(u.ini), line))
            self.assertNotIn("spawned uWSGI worker", log)
            self.assertEqual(u.events(), [])
        else:
            # Python 3.12 and earlier: the option works, and is left alone
            u.start(wait_ready=2)
            self.assertTrue(u.get("/").isdigit())
            self.assertNotIn("Fatal Python error", u.log_text())
            self.assertEqual(u.stop(), 0, u.log_text()[-3000:])

    def test_with_python_fork_hooks(self):
        # the python plugin then skips PyOS_AfterFork_Child() in post_fork
        # and runs PyOS_BeforeFork/AfterFork_* around each worker's fork
        u = Uwsgi(self, BASE + "py-call-osafterfork = true\nenable-threads = true\n"
                  "py-call-uwsgi-fork-hooks = true\nforksafe-python-atfork = false\n",
                  settings={})
        u.start(wait_ready=2)
        self.assertTrue(u.get("/").isdigit())
        self.assertNotIn("Fatal Python error", u.log_text())
        self.assertEqual(u.stop(), 0, u.log_text()[-3000:])
