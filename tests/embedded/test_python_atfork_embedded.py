"""tests/integration/test_python_atfork.py's counting cases against the
monolithic uWSGI: there the fork() that forksafe wraps is called from the
same executable forksafe is compiled into, through that executable's GOT."""

import embedded_env  # noqa: F401  (before test_python_atfork imports harness)
import test_python_atfork


def load_tests(loader, tests, pattern):
    return loader.loadTestsFromTestCase(test_python_atfork.CountingTest)
