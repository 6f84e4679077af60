"""The recipe: handler kind through the real C core (libforksafe, as the
gunicorn and Celery adapters drive it): specs checked at start-up with the
sentence the user sees, a recipe delivered every event it belongs to from
one line, and recipe:sqlalchemy and recipe:gc-freeze doing their work in a
real fork()ed child with the real SQLAlchemy.  The servers themselves
(uWSGI, gunicorn, Celery against PostgreSQL; prometheus_client) are
tests/integration's."""
import contextlib
import gc
import io
import json
import os
import re
import sys
import tempfile
import unittest

import forksafe_support  # noqa: F401  (this checkout's packages first)

from forksafe import recipes
from forksafe.host import ForksafeError
from forksafe.host import Host


def child(run):
    """Runs RUN() in a fork()ed child; returns what it returned (JSON)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(read_end)
            os.write(write_end, json.dumps(run()).encode())
        except BaseException as e:  # noqa: B902 - said to the parent
            os.write(write_end, json.dumps({"error": repr(e)}).encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    answer = json.loads(data.decode() or "null")
    if os.WEXITSTATUS(status) != 0:
        raise AssertionError("the child failed: %r" % (answer,))
    return answer


def _sqlalchemy_recipes():
    """The recipe:sqlalchemy objects alive in this process."""
    from forksafe.recipe_sqlalchemy import SQLAlchemy

    return [thing for thing in gc.get_objects() if isinstance(thing, SQLAlchemy)]


class SpecTest(unittest.TestCase):
    """What the core says at start-up, FILE:LINE first."""

    def host_error(self, line):
        with self.assertRaises(ForksafeError) as caught:
            Host("gunicorn", subscriptions=[line], source="gunicorn.conf.py", log=lambda *a: None)
        return str(caught.exception)

    def test_unknown_recipe(self):
        self.assertEqual(
            self.host_error("post-fork recipe:sqlalchmy"),
            "gunicorn.conf.py:1: handler 'recipe:sqlalchmy': unknown recipe 'sqlalchmy'; the "
            "recipes are auto, gc-freeze, prometheus, sqlalchemy")

    def test_unknown_option_and_value(self):
        self.assertIn("recipe:sqlalchemy has no option after= (its options: before=)",
                      self.host_error("post-fork recipe:sqlalchemy?after=dispose"))
        self.assertIn("before=close is not one of keep, dispose",
                      self.host_error("post-fork recipe:sqlalchemy?before=close"))
        self.assertIn("option before= given twice",
                      self.host_error("post-fork recipe:sqlalchemy?before=keep&before=dispose"))

    def test_an_event_the_recipe_has_no_part_in(self):
        self.assertIn("it has no part in post-fork, worker-ready; it runs at pre-fork",
                      self.host_error("post-fork,worker-ready recipe:gc-freeze"))

    def test_a_library_that_is_not_installed(self):
        # None in sys.modules is Python's own "cannot be imported"
        saved = sys.modules.get("sqlalchemy")
        sys.modules["sqlalchemy"] = None
        try:
            message = self.host_error("post-fork recipe:sqlalchemy")
        finally:
            if saved is None:
                del sys.modules["sqlalchemy"]
            else:
                sys.modules["sqlalchemy"] = saved
        self.assertIn("recipe:sqlalchemy fixes sqlalchemy, which this Python", message)
        self.assertIn("install it (Debian: python3-sqlalchemy)", message)

    def test_one_line_subscribes_every_event_of_the_recipe(self):
        heard = []
        host = Host("gunicorn", subscriptions=["post-fork recipe:sqlalchemy"],
                    verbose=True, log=lambda level, line: heard.append(line))
        self.addCleanup(host.close)
        for event, kind in (("master-start", "master"), ("worker-ready", "worker")):
            host.dispatch(event, kind, 0 if kind == "master" else 1)
        ran = [line for line in heard if "handler 'recipe:sqlalchemy' ran" in line]
        self.assertEqual(len(ran), 1, heard)
        self.assertIn("on master-start", ran[0])

    def test_parse(self):
        self.assertEqual(recipes.parse("sqlalchemy?before=dispose"),
                         ("sqlalchemy", {"before": "dispose"}))
        self.assertEqual(recipes.parse(" gc-freeze "), ("gc-freeze", {}))
        self.assertEqual(recipes.make("sqlalchemy?before=keep").spec, "recipe:sqlalchemy")


class SQLAlchemyRecipeTest(unittest.TestCase):
    """recipe:sqlalchemy through the core, in a real child process."""

    def setUp(self):
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import QueuePool

        self.text = text
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        self.url = "sqlite:///%s/app.sqlite" % directory.name
        # made and used before the host exists: found by the heap walk
        self.early = create_engine(self.url, poolclass=QueuePool)
        self.addCleanup(self.early.dispose)
        with self.early.connect() as conn:
            conn.execute(text("SELECT 1"))

    def host(self, spec):
        lines = []
        host = Host("gunicorn", subscriptions=["post-fork " + spec],
                    log=lambda level, line: lines.append(line))
        self.addCleanup(host.close)
        return host, lines

    def test_the_child_drops_inherited_pools_and_the_parent_keeps_its_own(self):
        from sqlalchemy import create_engine
        from sqlalchemy.pool import QueuePool

        before = {id(r) for r in _sqlalchemy_recipes()}
        host, _ = self.host("recipe:sqlalchemy")
        mine = [r for r in _sqlalchemy_recipes() if id(r) not in before]
        host.dispatch("master-start", "master", 0)
        self.assertEqual([r.listening for r in mine], [True])
        # made after master-start: found by the engine_connect listener
        late = create_engine(self.url, poolclass=QueuePool)
        self.addCleanup(late.dispose)
        with late.connect() as conn:
            conn.execute(self.text("SELECT 1"))
        host.dispatch("pre-fork", "master", 0, child={"kind": "worker", "id": 1})
        before = {"early": id(self.early.pool), "late": id(late.pool)}
        held = self.early.pool.checkedin()

        def in_child():
            host.dispatch("post-fork", "worker", 1)
            host.dispatch("post-fork", "worker", 1)  # twice: disposed once
            from sqlalchemy import event
            from sqlalchemy.engine import Engine

            return {"early": id(self.early.pool), "late": id(late.pool),
                    "early_checkedin": self.early.pool.checkedin(),
                    "listening": [event.contains(Engine, "engine_connect", r._on_connect)
                                  for r in mine]}

        answer = child(in_child)
        self.assertEqual(held, 1)
        self.assertNotEqual(answer["early"], before["early"])
        self.assertNotEqual(answer["late"], before["late"])
        self.assertEqual(answer["early_checkedin"], 0)
        # the child's own requests do not pay the master's tracking
        self.assertEqual(answer["listening"], [False])
        # the parent's pool is untouched: close=False in the child
        self.assertEqual(id(self.early.pool), before["early"])
        self.assertEqual(self.early.pool.checkedin(), 1)

    def test_before_dispose_empties_the_pool_in_the_parent(self):
        host, _ = self.host("recipe:sqlalchemy?before=dispose")
        host.dispatch("master-start", "master", 0)
        self.assertEqual(self.early.pool.checkedin(), 1)
        host.dispatch("pre-fork", "master", 0, child={"kind": "worker", "id": 1})
        self.assertEqual(self.early.pool.checkedin(), 0)


class AutoRecipeTest(unittest.TestCase):
    """recipe:auto decides at master-start from what is imported, and says so."""

    def master_start(self, environ):
        import prometheus_client  # noqa: F401  (imported, as an app would)
        import sqlalchemy  # noqa: F401

        saved = {k: os.environ.pop(k) for k in list(os.environ) if k.lower() ==
                 "prometheus_multiproc_dir"}
        self.addCleanup(os.environ.update, saved)
        os.environ.update(environ)
        for key in environ:
            self.addCleanup(os.environ.pop, key, None)
        host = Host("gunicorn", subscriptions=["* recipe:auto"], log=lambda *a: None)
        self.addCleanup(host.close)
        said = io.StringIO()
        with contextlib.redirect_stderr(said):
            host.dispatch("master-start", "master", 0)
        return re.findall(r"recipe:auto (.*)", said.getvalue())

    def test_applies_what_is_imported_and_set_up(self):
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        self.assertEqual(self.master_start({"PROMETHEUS_MULTIPROC_DIR": directory.name}),
                         ["applies prometheus (prometheus_client imported), "
                          "sqlalchemy (sqlalchemy imported)"])

    def test_says_why_a_recipe_is_left_out(self):
        said = self.master_start({})
        self.assertEqual(len(said), 1, said)
        self.assertTrue(said[0].startswith(
            "applies sqlalchemy (sqlalchemy imported); not prometheus (recipe:prometheus: "
            "PROMETHEUS_MULTIPROC_DIR is not set"), said)


class GCFreezeRecipeTest(unittest.TestCase):

    def test_freezes_once_per_generation(self):
        lines = []
        host = Host("gunicorn", subscriptions=["pre-fork recipe:gc-freeze"],
                    log=lambda level, line: lines.append(line))
        self.addCleanup(host.close)
        self.addCleanup(gc.unfreeze)
        gc.unfreeze()
        kept = [{"n": i} for i in range(10000)]
        said = io.StringIO()
        with contextlib.redirect_stderr(said):
            for generation in (0, 0, 1):
                host.dispatch("pre-fork", "master", 0, generation=generation,
                              child={"kind": "worker", "id": 1})
        self.assertGreater(gc.get_freeze_count(), len(kept))
        froze = re.findall(r"recipe:gc-freeze: the master froze \d+ objects before its first "
                           r"fork of generation (\d+)", said.getvalue())
        self.assertEqual(froze, ["0", "1"], said.getvalue())
        del kept


if __name__ == "__main__":
    unittest.main()
