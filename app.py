"""The WSGI entry point for `gunicorn app:app`."""
from gateway import create_app

app = create_app()
