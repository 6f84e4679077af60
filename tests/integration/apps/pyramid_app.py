"""A Pyramid app that includes pyramid_forksafe and records every event its
subscribers receive (settings['pyramid_log']), for the integration tests."""
import json
import os

from pyramid.config import Configurator
from pyramid.response import Response

from pyramid_forksafe.interfaces import IForksafeEvent


def recorder(label):
    def record(event):
        settings = event.registry.settings
        line = json.dumps({
            "app": label,
            "class": type(event).__name__,
            "replayed": bool(getattr(event, "replayed", False)),
            "pid": os.getpid(),
            "payload": event.payload,
            "title": settings.get("title"),
        }, sort_keys=True) + "\n"
        fd = os.open(settings["pyramid_log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    return record


def pid_view(request):
    return Response(str(os.getpid()))


def main(global_config, label="main", **settings):
    config = Configurator(settings=settings)
    if settings.get("include_explicitly", "true") == "true":
        config.include("pyramid_forksafe")
    config.add_subscriber(recorder(label), IForksafeEvent)
    config.add_route("pid", "/")
    config.add_view(pid_view, route_name="pid")
    return config.make_wsgi_app()
