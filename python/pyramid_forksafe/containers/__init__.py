"""Per-container wiring: ``uwsgi`` (auto-configured by including
pyramid_forksafe); ``gunicorn`` and ``celery`` are :mod:`forksafe.gunicorn`
and :mod:`forksafe.celery` under 0.2's names."""
