"""The example project's one task: run by the outbox worker, its return value kept as the result."""

from django_tasks import task


@task()
def count_words(*, text: str) -> int:
    return len(text.split())
