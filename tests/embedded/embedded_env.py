"""Points the integration harness at the monolithic uWSGI of `make embedded`.

Imported by every test module here before anything imports harness:
harness reads FORKSAFE_UWSGI and FORKSAFE_EMBEDDED when it is imported.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "build", "embedded")
BINARY = os.environ.setdefault("FORKSAFE_UWSGI", os.path.join(OUT, "uwsgi"))
os.environ["FORKSAFE_EMBEDDED"] = "1"
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
