"""A transactional outbox for Django email.

Public API:
- `outbox_worker.services.outbox_enqueue`: queue an email inside the caller's transaction.
- `outbox_worker.services.outbox_resend` / `outbox_retry_now` / `outbox_cancel`: operator actions.
- `python manage.py outbox_worker`: the delivery worker.
- the admin for `OutboxMessage`.

Installed on its own as the `outbox_worker` distribution (pyproject.toml at the
repository root); a host project adds "outbox_worker" to INSTALLED_APPS.
"""

__version__ = "0.1.0"
