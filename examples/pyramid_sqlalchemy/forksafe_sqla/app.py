"""The Pyramid app: makes the engine at start-up and queries the database
there -- in the uWSGI master, apps preloaded, so a connection sits in the
pool when the workers are forked -- and answers /db with who served it,
and / with that and every process's fork lifecycle events."""

from pyramid.config import Configurator
from pyramid.response import Response
from pyramid.settings import asbool

from . import db
from .events_page import events_json, home


def db_view(request):
    return db.probe(db.engine_for(request.registry.settings))


def make_app(global_config, **settings):
    engine = db.engine_for(settings)
    db.startup_check(engine)
    config = Configurator(settings=settings)
    if asbool(settings.get("forksafe_sqla.pyramid_forksafe", False)):
        # Also (or instead) get post-fork through pyramid_forksafe's
        # ApplicationPostFork; off by default, the [forksafe] python:
        # subscription needs no Pyramid glue.
        config.include("forksafe_sqla.forksafe")
    config.add_route("home", "/")
    config.add_route("db", "/db")
    config.add_route("events", "/events.json")
    config.add_view(home, route_name="home")
    config.add_view(events_json, route_name="events")
    config.add_view(db_view, route_name="db", renderer="json")
    return config.make_wsgi_app()

