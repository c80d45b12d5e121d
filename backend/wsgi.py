"""WSGI entry point for gunicorn (see gunicorn.conf.py)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")

application = get_wsgi_application()

# gunicorn.conf.py's on_starting hook reports this in one line before any
# worker boots; this is the backstop for a server started another way.
from backend.startup import require_production_config  # noqa: E402

require_production_config(serves_http=True)
