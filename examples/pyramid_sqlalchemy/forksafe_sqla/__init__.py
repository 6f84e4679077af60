"""forksafe_sqla: a Pyramid + SQLAlchemy app made fork-safe by forksafe.

The package itself imports nothing heavy, so that `forksafe_sqla.db` and
`forksafe_sqla.forksafe` serve apps without Pyramid too (see plain_wsgi.py).
"""


def main(global_config, **settings):
    """PasteDeploy entry point (`use = call:forksafe_sqla:main`)."""
    from .app import make_app

    return make_app(global_config, **settings)
