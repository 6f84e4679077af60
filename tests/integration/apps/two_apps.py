"""Two Pyramid apps, each with its own registry, in one process."""
import os

import pyramid_app

settings = {"pyramid_log": os.environ["PYRAMID_LOG"]}
first = pyramid_app.main({}, label="first", title="one", **settings)
second = pyramid_app.main({}, label="second", title="two", **settings)


def application(environ, start_response):
    app = second if environ.get("PATH_INFO", "").startswith("/second") else first
    return app(environ, start_response)
