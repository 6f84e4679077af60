"""The ``recipe:NAME[?OPTIONS]`` handler kind: what a recipe is, which
recipes there are, and how a spec becomes one.

A recipe is forksafe's own handler for a library that breaks across a fork,
the fix its documentation gives (SQLAlchemy's ``dispose(close=False)``,
prometheus_client's ``mark_process_dead``, ``gc.freeze()``), so that the
common case needs no code.  It knows the events it belongs to: one line
under any of them subscribes it to all of them.

The C core (``lib/recipe.c``) calls :func:`resolve_for_core` once per
``recipe:`` line, in the master before any fork, and then calls the recipe
it got with each event's payload -- the same under uWSGI, gunicorn and
Celery.  Each recipe lives in a module of its own (``recipe_*.py``); this
one holds what they share and ``recipe:auto``.
"""
import importlib.util
import os
import sys

from .host import write_to_stderr


class RecipeError(Exception):
    """A ``recipe:`` spec that cannot be used: the message says why, in a
    sentence the start-up error prints after ``FILE:LINE``."""


def say(message):
    """One ``[forksafe]`` line where the core's own lines go."""
    write_to_stderr("info", message)


def where(payload):
    """``worker 1 (pid 4242)`` for the process a payload was made in."""
    process = payload.get("process") or {}
    kind = process.get("kind", "process")
    if kind == "master":
        return "the master (pid %s)" % process.get("pid", os.getpid())
    return "%s %s (pid %s)" % (kind, process.get("id"), process.get("pid", os.getpid()))


def installed(module):
    """Whether MODULE (a top-level name) can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


class Recipe(object):
    """One recipe, made from a spec's options.  A subclass says its
    ``name``, the ``library`` it fixes (the top-level module; None: none),
    its ``debian_package``, its ``options`` ({name: (allowed values...)},
    the first value the default), and has a method per event it belongs to
    (``post_fork`` for post-fork); :attr:`events` lists them."""

    name = None
    library = None
    debian_package = None
    options = {}

    def __init__(self, options, lazy=False):
        self.option = options
        self.lazy = lazy

    @property
    def events(self):
        """The events this recipe runs at (names, as the core spells them)."""
        return tuple(event for event in EVENTS if self.handles(event))

    def handles(self, event):
        return callable(getattr(self, event.replace("-", "_"), None))

    def check(self):
        """Start-up checks beyond the library being there: raise RecipeError."""

    def applicable(self):
        """For recipe:auto, whose caller saw the library imported: (whether
        to apply, why) -- a recipe whose library is imported but not used in
        the way it fixes says so here."""
        try:
            self.check()
        except RecipeError as e:
            return False, str(e)
        return True, "%s imported" % self.library

    @property
    def spec(self):
        chosen = ["%s=%s" % item for item in sorted(self.option.items())
                  if item[1] != self.options[item[0]][0]]
        return "recipe:%s%s" % (self.name, "?" + "&".join(chosen) if chosen else "")

    def __call__(self, payload):
        method = getattr(self, payload["event"].replace("-", "_"), None)
        if method is not None:
            method(payload)

    def __repr__(self):
        return "<forksafe %s>" % self.spec


#: every event, in the core's order (include/forksafe.h).
EVENTS = ("master-start", "pre-fork", "post-fork-parent", "post-fork", "worker-ready",
          "child-death", "worker-exit", "master-exit", "generation-ready")


def _registry():
    """{name: Recipe subclass}; imported here so that a recipe's module is
    loaded only when a spec asks for recipes at all."""
    from . import recipe_gc_freeze
    from . import recipe_prometheus
    from . import recipe_sqlalchemy

    recipes = {
        recipe_sqlalchemy.SQLAlchemy.name: recipe_sqlalchemy.SQLAlchemy,
        recipe_gc_freeze.GCFreeze.name: recipe_gc_freeze.GCFreeze,
        recipe_prometheus.Prometheus.name: recipe_prometheus.Prometheus,
        Auto.name: Auto,
    }
    return recipes


def names():
    return sorted(_registry())


def parse(spec):
    """(name, {option: value}) of ``NAME[?KEY=VALUE&...]``, as written."""
    name, _, query = spec.strip().partition("?")
    options = {}
    for item in query.split("&") if query else ():
        key, equals, value = item.partition("=")
        if not key or not equals:
            raise RecipeError("recipe:%s: an option is written option=value (several joined by &), not %r"
                              % (name, item))
        if key in options:
            raise RecipeError("recipe:%s: option %s= given twice" % (name, key))
        options[key] = value
    return name, options


def make(spec, lazy=False):
    """The recipe SPEC names, checked: RecipeError says what is wrong."""
    name, given = parse(spec)
    recipes = _registry()
    cls = recipes.get(name)
    if cls is None:
        raise RecipeError("unknown recipe %r; the recipes are %s" % (name, ", ".join(sorted(recipes))))
    options = {}
    for key, value in given.items():
        allowed = cls.options.get(key)
        if allowed is None:
            known = ", ".join("%s=" % k for k in sorted(cls.options)) or "none"
            raise RecipeError("recipe:%s has no option %s= (its options: %s)" % (name, key, known))
        if value not in allowed:
            raise RecipeError("recipe:%s: %s=%s is not one of %s"
                              % (name, key, value, ", ".join(allowed)))
        options[key] = value
    for key, allowed in cls.options.items():
        options.setdefault(key, allowed[0])
    if cls.library and not installed(cls.library):
        raise RecipeError("recipe:%s fixes %s, which this Python (%s) cannot import; install it "
                          "(Debian: %s) or drop the line"
                          % (name, cls.library, sys.executable or "python", cls.debian_package))
    recipe = cls(options, lazy=lazy)
    recipe.check()
    return recipe


def resolve_for_core(spec, lazy=False):
    """For ``lib/recipe.c``: (recipe, None), or (None, what is wrong)."""
    try:
        return make(spec, bool(lazy)), None
    except RecipeError as e:
        return None, str(e)


# ------------------------------------------------------------ recipe:auto


class Auto(Recipe):
    """``recipe:auto``: every recipe whose library the app imported (in the
    master, by ``master-start``), with its default options.  ``gc-freeze``
    fixes no library and trades memory a collection would free for pages
    that stay shared: it is never applied by auto, only by name."""

    name = "auto"

    def __init__(self, options, lazy=False):
        Recipe.__init__(self, options, lazy)
        recipes = _registry()
        self.candidates = [recipes[name]({k: v[0] for k, v in recipes[name].options.items()},
                                         lazy=lazy)
                           for name in sorted(recipes)
                           if name != self.name and recipes[name].library]
        self.applied = None

    @property
    def events(self):
        return tuple(event for event in EVENTS
                     if any(recipe.handles(event) for recipe in self.candidates))

    def handles(self, event):
        return any(recipe.handles(event) for recipe in self.candidates)

    def _applicable(self, recipe):
        if recipe.library in sys.modules:
            return recipe.applicable()
        if self.lazy and installed(recipe.library):
            # lazy-apps: the app is imported in each worker, after the fork.
            ok, why = recipe.applicable()
            return ok, why.replace("imported", "installed (lazy-apps)")
        return False, "%s not imported" % recipe.library

    def _decide(self):
        applied, left = [], []
        for recipe in self.candidates:
            ok, why = self._applicable(recipe)
            (applied if ok else left).append((recipe, why))
        self.applied = [recipe for recipe, _ in applied]
        return applied, left

    def master_start(self, payload):
        applied, left = self._decide()
        parts = ["applies %s" % ", ".join("%s (%s)" % (r.name, why) for r, why in applied)
                 if applied else "applies nothing"]
        if left:
            parts.append("not %s" % ", ".join("%s (%s)" % (r.name, why) for r, why in left))
        say("recipe:auto %s" % "; ".join(parts))
        for recipe in self.applied:
            recipe(payload)

    def __call__(self, payload):
        if payload["event"] == "master-start":
            self.master_start(payload)
            return
        if self.applied is None:
            # A process that never saw master-start (a host that starts
            # late): decide from what is imported now, quietly.
            self._decide()
        for recipe in self.applied:
            if recipe.handles(payload["event"]):
                recipe(payload)
