"""The page at /: which worker and database backend answered, and every fork
lifecycle event each process received (recorded by the event_log native
handler into settings['forksafe.event_log'])."""
import html
import json
import os

from pyramid.response import Response

from . import db


def read_events(path):
    """The events recorded so far.  Every process appends to the file while
    this reads it: a last line without its newline is still being written,
    and is left for the next read."""
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.endswith("\n") and line.strip()]
    except FileNotFoundError:
        return []


def home(request):
    settings = request.registry.settings
    events = read_events(settings["forksafe.event_log"])
    info = db.probe(db.engine_for(settings))
    startup = info["startup"] or {}
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
    body = """<!doctype html><title>forksafe_sqla</title>
<h1>forksafe_sqla</h1>
<p>Worker pid %d answered on database backend %s (%s); at start-up the master,
pid %s, used backend %s. JSON: <a href="/db">/db</a>, <a href="/events.json">/events.json</a>.</p>
<p>The fork lifecycle events every process received (this worker's rows in
bold), recorded by the <code>event_log</code> native handler subscribed in
production.ini's <code>[forksafe]</code> section:</p>
<table border=1 cellpadding=4><tr><th>process</th><th>pid</th><th>generation</th>
<th>event</th><th>detail</th></tr>%s</table>""" % (
        os.getpid(), html.escape(str(info["backend_pid"])), html.escape(str(info["url"])),
        html.escape(str(startup.get("pid"))), html.escape(str(startup.get("backend_pid"))),
        "\n".join(rows))
    return Response(body)


def events_json(request):
    return Response(json=read_events(request.registry.settings["forksafe.event_log"]))
