"""The plugin exports exactly the documented API: the uWSGI plugin struct and
the calls include/forksafe.h and include/forksafe_host.h declare, nothing of
lib/'s internals."""

import os
import re
import subprocess
import unittest

from harness import ROOT


class ExportsTest(unittest.TestCase):

    def test_exported_symbols_are_the_public_header(self):
        header = ""
        for name in ("forksafe.h", "forksafe_host.h"):
            with open(os.path.join(ROOT, "include", name)) as f:
                header += f.read()
        declared = set(re.findall(r"FORKSAFE_EXPORT [^;{]*?\b(forksafe_\w+)\s*\(", header))
        self.assertGreaterEqual(len(declared), 10)
        out = subprocess.run(["nm", "-D", "--defined-only",
                              os.path.join(ROOT, "forksafe_plugin.so")],
                             check=True, capture_output=True, text=True).stdout
        exported = {line.split()[-1] for line in out.splitlines()
                    if line.split() and line.split()[-2] in ("T", "D", "B", "R")}
        self.assertEqual(exported, declared | {"forksafe_plugin"})
