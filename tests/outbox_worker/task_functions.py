"""Module-level `@task` functions the task tests enqueue (a worker process imports them by path).

The ones that coordinate with a test do it through files in a directory the
test names, so a separate worker process can be observed and released.
"""

import os
import time
from pathlib import Path

from django_tasks import task

from outbox_worker.tasks import PermanentTaskError


@task()
def add(a: int, b: int) -> int:
    return a + b


@task()
def noop() -> None:
    return None


@task()
def record(directory: str, name: str) -> str:
    """Append `name` to runs.log in `directory`, one line per run: counts runs across processes."""
    with open(Path(directory) / "runs.log", "a") as log:
        log.write(f"{name} {os.getpid()}\n")
    return name


@task()
def fail_permanently(reason: str) -> None:
    raise PermanentTaskError(reason)


@task()
def fail_transiently(reason: str) -> None:
    raise RuntimeError(reason)


@task()
def fail_until(directory: str, failures: int) -> str:
    """Raise on the first `failures` runs, then succeed."""
    path = Path(directory) / "tries"
    tries = int(path.read_text()) if path.exists() else 0
    path.write_text(str(tries + 1))
    if tries < failures:
        raise RuntimeError(f"try {tries + 1} fails")
    return f"ok after {tries + 1}"


@task()
def block_until_released(directory: str, name: str, timeout: float = 120.0) -> str:
    """Write `<name>.started`, wait for `<name>.release` (bounded), write `<name>.done`."""
    folder = Path(directory)
    (folder / f"{name}.started").write_text(str(os.getpid()))
    deadline = time.monotonic() + timeout
    while not (folder / f"{name}.release").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} was never released")
        time.sleep(0.02)
    (folder / f"{name}.done").write_text(str(os.getpid()))
    return name


@task(queue_name="reports")
def in_reports_queue() -> str:
    return "reports"


# In-process tests register a callable here; `observe` reports to it what it sees when it runs.
OBSERVERS: list = []


@task()
def observe(label: str) -> None:
    for observer in OBSERVERS:
        observer(label)


@task()
def return_a_set() -> set:
    return {1, 2}
