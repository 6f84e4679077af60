"""forksafe_sqla's engine and post-fork handler without Pyramid: a plain
WSGI app.  Settings come from [app:main] of the ini named by the
FORKSAFE_SQLA_INI environment variable (plain.ini sets it), read with the
standard library's configparser (`%(here)s` works)."""

import configparser
import json
import os
import sys

from forksafe_sqla import db


def load_settings(path, section="app:main"):
    path = os.path.abspath(path)
    parser = configparser.ConfigParser(
        defaults={"here": os.path.dirname(path), "__file__": path})
    parser.optionxform = str  # keys are case-sensitive, as in PasteDeploy
    if not parser.read(path):
        raise RuntimeError("plain_wsgi: cannot read %s" % path)
    defaults = parser.defaults()
    return {key: value for key, value in parser.items(section) if key not in defaults}


SETTINGS = load_settings(os.environ.get("FORKSAFE_SQLA_INI")
                         or os.path.join(os.path.dirname(os.path.abspath(__file__)), "plain.ini"))
ENGINE = db.engine_for(SETTINGS)
db.startup_check(ENGINE)  # in the master: a connection in the pool before the fork


def application(environ, start_response):
    if environ.get("PATH_INFO", "/") not in ("/", "/db"):
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    info = db.probe(ENGINE)
    info["pyramid_loaded"] = "pyramid" in sys.modules
    body = json.dumps(info).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
