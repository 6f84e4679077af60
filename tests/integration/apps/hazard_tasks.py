"""A Celery task module with fork hazards of its own
(tests/integration/test_celery_hazards.py), imported by the worker's main
process ($CELERY_APP_IMPORTS) before billiard forks the pool: at import it
connects to $HAZARD_LISTENER (HOST:PORT) and keeps the connection, as a
module that makes its client at import does, and with $HAZARD_THREAD it
starts a thread of that name, as an exporter does."""
import os
import socket
import threading
import time

from celery_app import app

connection = None
if os.environ.get("HAZARD_LISTENER"):
    _host, _port = os.environ["HAZARD_LISTENER"].rsplit(":", 1)
    connection = socket.create_connection((_host, int(_port)), timeout=10)


def _export_forever():
    while True:
        time.sleep(3600)


if os.environ.get("HAZARD_THREAD"):
    threading.Thread(target=_export_forever, name=os.environ["HAZARD_THREAD"],
                     daemon=True).start()


@app.task(name="hazard_tasks.ping")
def ping():
    return "pong"
