"""The Pyramid app: makes the engine at start-up and queries the database
there -- in the uWSGI master, apps preloaded, so a connection sits in the
pool when the workers are forked -- and answers /db with who served it."""

from pyramid.config import Configurator
from pyramid.response import Response
from pyramid.settings import asbool

from . import db


def db_view(request):
    return db.probe(db.engine_for(request.registry.settings))


def home(request):
    info = db.probe(db.engine_for(request.registry.settings))
    startup = info["startup"] or {}
    return Response(
        "forksafe_sqla: worker pid %d answered on database backend %s (%s); at start-up "
        "pid %s used backend %s.  JSON: /db\n"
        % (info["pid"], info["backend_pid"], info["url"], startup.get("pid"),
           startup.get("backend_pid")),
        content_type="text/plain")


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
    config.add_view(home, route_name="home")
    config.add_view(db_view, route_name="db", renderer="json")
    return config.make_wsgi_app()

