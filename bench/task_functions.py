"""The tasks both backends run in the tasks benchmark (module level, imported by path by either worker)."""

import os
import time
from pathlib import Path

from django_tasks import task


@task()
def noop() -> None:
    return None


@task()
def stamp(path: str, enqueued: float) -> None:
    """Append how long after `enqueued` (wall clock, same machine) this run started."""
    started = time.time()
    with open(path, "a") as log:
        log.write(f"{started - enqueued:.6f}\n")


@task()
def block(folder: str) -> str:
    """Write `started`, wait (bounded) for `release`, write `done`: a task in flight to kill -9 under."""
    directory = Path(folder)
    (directory / "started").write_text(str(os.getpid()))
    deadline = time.monotonic() + 300
    while not (directory / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    (directory / "done").write_text(str(os.getpid()))
    return "done"
