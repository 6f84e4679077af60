"""A forksafe plugin built for one uWSGI and loaded into another stops
uWSGI at start-up with one line naming both versions and how to rebuild -
never a crash.  Each root of the matrix has built its own plugin by now
(matrix.py runs this last): this machine's (uWSGI 2.0.21) is loaded into
each root's uWSGI, and Debian 13's (2.0.28) into sid's (2.0.31)."""

import os
import re
import shutil
import subprocess
import tempfile
import unittest

import matrix

ROWS = [r for r in matrix.ROWS if r.name in os.environ.get("FORKSAFE_MATRIX_ROWS", "").split(",")]
HOST_PLUGIN = os.path.join(matrix.CHECKOUT, "forksafe_plugin.so")
UWSGI = os.environ.get("UWSGI", "uwsgi")


def version_of(output):
    """'2.0.31' from `uwsgi --version` ('2.0.31-debian')."""
    return re.match(r"(\d+\.\d+\.\d+)", output.strip()).group(1)


def run_in(root, argv, timeout=120):
    """ARGV run in ROOT (matrix.in_root): its status and its output."""
    with tempfile.TemporaryFile() as log:
        status = matrix.in_root(root, argv, timeout, log=log)
        log.seek(0)
        return status, log.read().decode(errors="replace")


class CrossLoading(unittest.TestCase):

    def refusal(self, output, plugin, built, running):
        line = re.escape("[forksafe] %s was built for uWSGI %s, and this is uWSGI %s;"
                         % (plugin, built, running))
        # the binary is named as the kernel knows it (/proc/self/exe)
        self.assertRegex(output, line + r" .*so it cannot run in (/\S+): rebuild it against "
                         r"this uWSGI \(`make UWSGI=\1` in forksafe's source\)")
        self.assertNotRegex(output, r"(?i)segmentation fault|signal 11")

    def host_version(self):
        return version_of(subprocess.run([UWSGI, "--version"], stdout=subprocess.PIPE,
                                         universal_newlines=True, check=True).stdout)

    def root_version(self, row):
        status, text = run_in(row.root, ["uwsgi", "--version"], 60)
        self.assertEqual(status, 0, text)
        return version_of(text)

    def test_this_machines_plugin_in_each_root(self):
        self.assertTrue(ROWS, "no matrix rows ran")
        host = self.host_version()
        for row in ROWS:
            with self.subTest(row=row.name):
                directory = os.path.join(row.root, "tmp", "forksafe-abi")
                os.makedirs(directory, exist_ok=True)
                self.addCleanup(shutil.rmtree, directory, True)
                shutil.copy(HOST_PLUGIN, directory)
                # --forksafe-check: were the plugin to load, it would check
                # the (empty) configuration and exit 0 at once
                status, output = run_in(row.root, [
                    "uwsgi", "--plugin", "/tmp/forksafe-abi/forksafe_plugin.so",
                    "--master", "--forksafe-check"])
                self.assertEqual(status, 1, output)
                self.refusal(output, "/tmp/forksafe-abi/forksafe_plugin.so", host,
                             self.root_version(row))

    def test_older_roots_plugin_in_newer_root(self):
        # Only that way round: a plugin built against a newer glibc does not
        # even load into an older release (the dynamic loader refuses it
        # before any of forksafe's code runs, with its own clear line).
        pairs = list(zip(ROWS, ROWS[1:]))
        if not pairs:
            self.skipTest("one root ran: nothing to cross-load between roots")
        for older, newer in pairs:
            with self.subTest(plugin=older.name, uwsgi=newer.name):
                built = os.path.join(older.root, "forksafe", "forksafe_plugin.so")
                self.assertTrue(os.path.exists(built), "the %s root built no plugin" % older.name)
                directory = os.path.join(newer.root, "tmp", "forksafe-abi-%s" % older.name)
                os.makedirs(directory, exist_ok=True)
                self.addCleanup(shutil.rmtree, directory, True)
                shutil.copy(built, directory)
                inside = "/tmp/forksafe-abi-%s/forksafe_plugin.so" % older.name
                status, output = run_in(newer.root, ["uwsgi", "--plugin", inside, "--master",
                                                      "--forksafe-check"])
                self.assertEqual(status, 1, output)
                self.refusal(output, inside, self.root_version(older), self.root_version(newer))


if __name__ == "__main__":
    unittest.main()
