#!/usr/bin/env python
"""Django's command-line utility for administrative tasks.

Configuration problems end the command with one line on stderr (exit 2), not
a traceback: a missing production setting, or Django not installed here.
"""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
    try:
        from django.core.exceptions import ImproperlyConfigured
        from django.core.management import execute_from_command_line
    except ImportError:
        sys.stderr.write("error: Django is not installed for this Python; locally, run ./scripts/manage COMMAND\n")
        sys.exit(2)
    try:
        from backend.startup import require_config_for_command

        require_config_for_command(sys.argv)
    except ImproperlyConfigured as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(2)
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
