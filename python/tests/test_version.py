"""One version for every artefact.  The source of truth is
include/forksafe.h's FORKSAFE_VERSION (the Makefile puts it in forksafe.pc
and libforksafe.so.VERSION; debian/rules refuses a changelog that
disagrees); what cannot be derived from it at build time is a copy, and this
test fails, naming each one, when a copy disagrees: both Python
distributions, the bridge module the gunicorn adapter provides, the Debian
changelog, and the versions the documentation shows."""
import glob
import os
import re
import sys
import unittest

from forksafe_support import REPO_ROOT

import forksafe
import pyramid_forksafe
from forksafe import gunicorn as fs_gunicorn


def header_version():
    with open(os.path.join(REPO_ROOT, "include", "forksafe.h")) as f:
        found = re.search(r'^#define FORKSAFE_VERSION "([^"]+)"$', f.read(), re.M)
    if found is None:
        raise AssertionError("include/forksafe.h has no FORKSAFE_VERSION")
    return found.group(1)


def read(*path):
    with open(os.path.join(REPO_ROOT, *path)) as f:
        return f.read()


class TestOneVersion(unittest.TestCase):
    maxDiff = None

    def setUp(self):
        self.version = header_version()

    def test_python_packages(self):
        self.assertEqual(forksafe.__version__, self.version)
        self.assertEqual(pyramid_forksafe.__version__, self.version)
        self.assertEqual(pyramid_forksafe.__VERSION__, self.version)

    def test_python_distributions_take_forksafes_version(self):
        for project in (("python", "pyproject.toml"), ("python", "forksafe", "pyproject.toml")):
            text = read(*project)
            self.assertIn('dynamic = ["version"]', text, os.path.join(*project))
            self.assertIn('version = {attr = "forksafe.__version__"}', text,
                          os.path.join(*project))
        pins = re.findall(r'"forksafe==([^"]+)"', read("python", "pyproject.toml"))
        self.assertEqual(pins, [self.version], "pyramid_forksafe's dependency on forksafe")

    def test_gunicorn_bridge_module(self):
        saved = sys.modules.pop("_forksafe", None)
        try:
            runtime = fs_gunicorn.install_runtime()
            self.assertEqual(runtime.version, self.version)
        finally:
            sys.modules.pop("_forksafe", None)
            if saved is not None:
                sys.modules["_forksafe"] = saved

    def test_debian_changelog(self):
        first = read("debian", "changelog").splitlines()[0]
        self.assertEqual(re.match(r"forksafe \(([^)]+)\)", first).group(1), self.version)

    def test_forksafe_pc_is_derived(self):
        self.assertIn("@version@", read("forksafe.pc.in"))
        self.assertRegex(read("Makefile"), r"FORKSAFE_VERSION := \$\(shell sed "
                         r".*FORKSAFE_VERSION.* include/forksafe.h\)")

    def test_documentation(self):
        """Deb file names (forksafe_X.Y.Z_arch.deb), the stats' "version" and
        the autoconfigure.log line the docs show."""
        patterns = (r"forksafe\*?_(\d+\.\d+\.\d+)_", r'"version": "(\d+\.\d+\.\d+)"',
                    r"forksafe (\d+\.\d+\.\d+) available")
        wrong = []
        for path in sorted(glob.glob(os.path.join(REPO_ROOT, "docs", "*.md"))
                           + [os.path.join(REPO_ROOT, "README.md"),
                              os.path.join(REPO_ROOT, "python", "README.md")]):
            with open(path) as f:
                for number, line in enumerate(f, 1):
                    for pattern in patterns:
                        for found in re.findall(pattern, line):
                            if found != self.version:
                                wrong.append("%s:%d: %s" % (os.path.relpath(path, REPO_ROOT),
                                                            number, found))
        self.assertEqual(wrong, [], "the documentation shows another version than %s"
                         % self.version)


if __name__ == "__main__":
    unittest.main()
