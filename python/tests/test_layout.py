"""The split by audience: `forksafe` imports without Pyramid, zope.interface
or pyramid_forksafe, and every 0.2/0.3 path of pyramid_forksafe is still
there (the same module objects, so state and attributes are shared)."""
import subprocess
import sys
import textwrap
import unittest

from forksafe_support import PACKAGE_ROOT

import forksafe.adapter
import forksafe.celery
import forksafe.gunicorn
import forksafe.host
import pyramid_forksafe
import pyramid_forksafe.containers.celery
import pyramid_forksafe.containers.gunicorn
import pyramid_forksafe.host
from pyramid_forksafe import framework


class TestCompatiblePaths(unittest.TestCase):
    def test_old_paths_are_the_modules(self):
        self.assertIs(pyramid_forksafe.host, forksafe.host)
        self.assertIs(pyramid_forksafe.containers.gunicorn, forksafe.gunicorn)
        self.assertIs(pyramid_forksafe.containers.celery, forksafe.celery)
        self.assertIs(sys.modules["pyramid_forksafe.containers.gunicorn"], forksafe.gunicorn)

    def test_public_names(self):
        for module in (pyramid_forksafe.host, pyramid_forksafe.containers.gunicorn,
                       pyramid_forksafe.containers.celery, forksafe.adapter):
            for name in module.__all__:
                self.assertTrue(hasattr(module, name), "%s.%s" % (module.__name__, name))

    def test_pyramid_forksafe_is_the_framework(self):
        self.assertIs(forksafe.adapter.framework(), framework)


HIDE = textwrap.dedent('''
    import sys

    class Hide(object):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("pyramid", "zope", "pyramid_forksafe", "paste"):
                raise ModuleNotFoundError("hidden: " + name, name=name)

    sys.meta_path.insert(0, Hide())
    for name in list(sys.modules):
        if name.split(".")[0] in ("pyramid", "zope", "pyramid_forksafe", "paste"):
            del sys.modules[name]
    sys.path.insert(0, %r)
''' % PACKAGE_ROOT)


class TestFrameworkFree(unittest.TestCase):
    def run_hidden(self, code):
        return subprocess.run([sys.executable, "-c", HIDE + textwrap.dedent(code)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, cwd="/")

    def test_forksafe_imports_without_pyramid(self):
        result = self.run_hidden('''
            import forksafe, forksafe.adapter, forksafe.celery, forksafe.gunicorn, forksafe.host
            assert forksafe.adapter.framework() is None
            loaded = sorted(n for n in sys.modules if n.split(".")[0] in ("pyramid", "zope"))
            print("loaded:", loaded)
        ''')
        self.assertEqual(result.returncode, 0, result.stdout)
        self.assertIn("loaded: []", result.stdout)

    def test_registry_needs_pyramid_forksafe(self):
        """Celery's registry= is Pyramid's: without pyramid_forksafe, a clear
        ValueError."""
        result = self.run_hidden('''
            import forksafe.adapter
            try:
                forksafe.adapter.framework("install(registry=...)")
            except ValueError as exc:
                print(exc)
        ''')
        self.assertEqual(result.returncode, 0, result.stdout)
        self.assertIn("install(registry=...) needs pyramid_forksafe", result.stdout)


if __name__ == "__main__":
    unittest.main()
