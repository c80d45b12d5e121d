"""Admin users for tests: staff with exactly the permissions a test names."""

from django.contrib.auth.models import Permission, User

PASSWORD = "s3nha-de-teste"


def make_staff(username: str, *perms: str) -> User:
    """Create an active staff user holding `perms` ("app_label.codename") and nothing else."""
    user = User.objects.create_user(username=username, password=PASSWORD, is_staff=True)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return user


def make_operator(username: str = "operadora") -> User:
    """Staff allowed to see, resend, retry and cancel outbox messages and to manage enrollments."""
    return make_staff(
        username,
        "outbox_worker.view_outboxmessage",
        "outbox_worker.change_outboxmessage",
        "outbox_worker.resend_outboxmessage",
        "enrollments.view_enrollment",
        "enrollments.change_enrollment",
    )
