"""The forksafe demo app: shows the fork lifecycle events every process got."""
import html
import json
import os

from pyramid.config import Configurator
from pyramid.response import Response


def read_events(path):
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def home(request):
    settings = request.registry.settings
    events = read_events(settings["forksafe.event_log"])
    rows = []
    for e in events:
        p = e["process"]
        mine = p["pid"] == os.getpid()
        child = e.get("child")
        detail = ""
        if child:
            detail = "%s %s%s" % (child["kind"], child["id"],
                                  " pid %s" % child["pid"] if "pid" in child else "")
        if "reason" in e:
            detail += " (%s)" % e["reason"]
        rows.append("<tr%s><td>%s %s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>" % (
            ' style="font-weight:bold"' if mine else "",
            html.escape(p["kind"]), p["id"], p["pid"], e["generation"],
            html.escape(e["event"]), html.escape(detail)))
    body = """<!doctype html><title>%s</title>
<h1>%s</h1>
<p>This page was served by pid %d (bold rows). Events are recorded by the
<code>event_log</code> native handler, subscribed in production.ini's
<code>[forksafe]</code> section.</p>
<table border=1 cellpadding=4><tr><th>process</th><th>pid</th><th>generation</th>
<th>event</th><th>detail</th></tr>%s</table>""" % (
        html.escape(settings["demo.title"]), html.escape(settings["demo.title"]),
        os.getpid(), "\n".join(rows))
    return Response(body)


def events_json(request):
    return Response(json=read_events(request.registry.settings["forksafe.event_log"]))


def main(global_config, **settings):
    config = Configurator(settings=settings)
    config.add_route("home", "/")
    config.add_route("events", "/events.json")
    config.add_view(home, route_name="home")
    config.add_view(events_json, route_name="events")
    return config.make_wsgi_app()
