#!/usr/bin/env python
"""A second, minimal Django project that uses outbox_worker installed from its wheel (see README.md here)."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
