"""All of tests/integration/test_reasons.py against the monolithic uWSGI:
there forksafe's own kill() calls go through the GOT entry it replaces."""

import embedded_env  # noqa: F401  (before test_reasons imports harness)
import test_reasons


def load_tests(loader, tests, pattern):
    return loader.loadTestsFromModule(test_reasons)
