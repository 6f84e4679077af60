"""A WSGI app whose module starts a named thread at import, as telemetry
exporters and schedulers do (tests/integration/test_hazards.py)."""
import threading
import time


def _export_forever():
    while True:
        time.sleep(3600)


_exporter = threading.Thread(target=_export_forever, name="metrics-exporter", daemon=True)
_exporter.start()


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"threads: %d\n" % threading.active_count()]
