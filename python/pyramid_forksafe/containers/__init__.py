"""Per-container wiring: ``uwsgi`` (auto-configured by including
pyramid_forksafe) and ``gunicorn`` (hooks imported into a gunicorn config)."""
