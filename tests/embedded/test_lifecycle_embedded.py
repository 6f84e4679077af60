"""All of tests/integration/test_lifecycle.py, against the monolithic uWSGI
(python and forksafe compiled in, no plugin loading line in the ini)."""

import embedded_env  # noqa: F401  (before test_lifecycle imports harness)
import test_lifecycle


def load_tests(loader, tests, pattern):
    return loader.loadTestsFromModule(test_lifecycle)
