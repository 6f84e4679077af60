"""tests/integration/test_hazards.py's uWSGI-only cases against the
monolithic uWSGI: there forksafe's own threads are started through the GOT
entry of pthread_create() it replaces, and uWSGI's plugins are part of the
executable whose threads count as uWSGI's own."""

import embedded_env  # noqa: F401  (before test_hazards imports harness)
import test_hazards


def load_tests(loader, tests, pattern):
    suite = loader.loadTestsFromTestCase(test_hazards.PlainHazardTest)
    suite.addTests(loader.loadTestsFromTestCase(test_hazards.RefusalTest))
    return suite
