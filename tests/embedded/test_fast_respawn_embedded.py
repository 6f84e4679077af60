"""All of tests/integration/test_fast_respawn.py against the monolithic
uWSGI: there the wake-ups and pidfds join the master's event queue from
code linked into the executable itself."""

import embedded_env  # noqa: F401  (before test_fast_respawn imports harness)
import test_fast_respawn


def load_tests(loader, tests, pattern):
    return loader.loadTestsFromModule(test_fast_respawn)
