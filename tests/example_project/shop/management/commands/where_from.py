import json

from django.core.management.base import BaseCommand
from django.db import connection
from django.template.loader import get_template

import outbox_worker


class Command(BaseCommand):
    help = "Print where outbox_worker, its admin templates and the database driver came from (JSON)."

    def handle(self, **options):
        template = get_template("admin/outbox_worker/outboxmessage/change_list.html")
        self.stdout.write(
            json.dumps(
                {
                    "package": outbox_worker.__file__,
                    "template": template.origin.name,
                    "driver": connection.Database.__name__,
                }
            )
        )
