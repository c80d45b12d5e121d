"""`outbox_worker --processes N`: one replica, N worker processes.

A worker's sender threads share one interpreter lock, so one process uses
about one CPU however many threads it runs. With `--processes N` the command
becomes this small parent: it starts N children, each a fresh interpreter
running the same command with `--processes 1`, and only watches them. It opens
no database connection and starts no thread, and it never forks itself: each
child is a new `python manage.py outbox_worker …` (`child_program`), so no child
inherits a half-copied connection or lock.

- SIGTERM/SIGINT: forwarded to every child, which finishes or hands back the
  message in hand (worker.py); the parent exits 0 when all stopped cleanly.
  A second signal, or children still running `stop_timeout` after the first,
  forwards the signal again (each child aborts at once, as a lone worker does
  on its second signal) and SIGKILLs what is left after ABORT_GRACE: exit 1.
- A child that dies while nobody asked it to (a signal, the OOM killer, a
  crash) is logged and started again, after a pause that doubles with each
  quick death (RESTART_BACKOFF). A child that exits with USAGE_ERROR (argparse
  and manage.py's configuration check) would fail the same way again: the
  parent stops the others and raises ChildRefused instead of looping.
- `--once`: nothing is restarted; the parent exits when every child has, with
  the worst exit code (0 when every child drained).

Children run in their own process group, so a terminal's Ctrl-C reaches them
once, through the parent, rather than twice (which would abort them). Each
child asks the kernel for SIGTERM when the parent dies (`die_with_parent`).
"""

import ctypes
import errno
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .logevents import log_event

logger = logging.getLogger("outbox_worker.supervisor")

# argparse's exit code for a bad option, and manage.py's for a missing setting.
USAGE_ERROR = 2
# (first, maximum) seconds before a dead child is started again; doubles with each quick death.
RESTART_BACKOFF = (1.0, 30.0)
# A child that ran this long died of something new: its next restart waits the first step again.
HEALTHY_AFTER = 60.0
# Seconds between the abort (second signal or timeout) and SIGKILL for a child still running: an
# aborting worker still hands its rows back and closes its email connection, which a server that
# stopped answering holds for up to EMAIL_TIMEOUT (10 s).
ABORT_GRACE = 15.0
# Set in each child's environment: the parent's pid, for die_with_parent.
SUPERVISOR_PID_ENV = "OUTBOX_SUPERVISOR_PID"
# Longest wait between looks at the children; a signal or a child's exit wakes the parent sooner.
IDLE_WAKE = 1.0

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class ChildRefused(Exception):
    """A child exited with a usage or configuration error: starting it again would fail the same way."""

    def __init__(self, slot: int, returncode: int) -> None:
        super().__init__(
            f"worker process {slot} exited with code {returncode} (a usage or configuration error, "
            f"reported above); not restarting it"
        )
        self.returncode = returncode


def child_program() -> list[str]:
    """The interpreter and program that started this process, to start a child the same way.

    `python manage.py` (or `django-admin`) runs its file again; `python -m
    django` runs the module again, since running its __main__.py as a file
    would put django/ itself first on the child's import path.
    """
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    if spec is not None and spec.name.endswith(".__main__"):
        return [sys.executable, "-m", spec.name.removesuffix(".__main__")]
    return [sys.executable, sys.argv[0]]


def exit_code(returncode: int) -> int:
    """A child's returncode as a shell reports it: killed by signal N is 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def restart_delay(quick_deaths: int) -> float:
    """Seconds to wait before starting a child that died `quick_deaths` times in a row (1, 2, 4 … 30)."""
    first, maximum = RESTART_BACKOFF
    return min(maximum, first * 2 ** max(0, quick_deaths - 1))


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGTERM this process when its supervisor dies; exit now if it already has.

    PR_SET_PDEATHSIG rather than watching os.getppid(): it acts at once, needs
    no thread or hook in the worker's loops (a draining worker has no idle
    loop to look from), and SIGTERM takes the worker's graceful path, so rows
    in hand are handed back instead of waiting for the heartbeat to go stale.
    It is Linux only (Railway runs Linux); elsewhere children of a parent
    killed with SIGKILL run on until stopped. The signal follows the thread
    that started the child, which is always the parent's main thread.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:
        log_event(logger, logging.WARNING, "outbox.no_parent_death_signal", platform=sys.platform)
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        raise SystemExit(1)


def _signal_name(returncode: int) -> dict[str, str]:
    """{"signal": "SIGKILL"} for a child killed by a signal, {} for one that exited."""
    if returncode >= 0:
        return {}
    try:
        return {"signal": signal.Signals(-returncode).name}
    except ValueError:
        return {"signal": str(-returncode)}


@dataclass
class Slot:
    """One of the N places a child runs in, across its restarts."""

    number: int
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    quick_deaths: int = 0
    restart_at: float | None = None
    last_code: int | None = None  # the exit code of the child that ran here last


class Supervisor:
    def __init__(
        self,
        *,
        command: Sequence[str],
        processes: int,
        once: bool,
        stop_timeout: float,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """`command`: the full argv of one child (a `--processes 1` worker)."""
        self.command = list(command)
        self.once = once
        self.stop_timeout = stop_timeout
        self.env = {**(os.environ if env is None else env), SUPERVISOR_PID_ENV: str(os.getpid())}
        self.slots = [Slot(number) for number in range(1, processes + 1)]
        self.starts = 0  # children started in all, restarts included
        self._pending_signals: list[int] = []
        self._stop_signals = 0  # 1: stopping gracefully; 2: aborting; 3: killing
        self._deadline: float | None = None  # when the current stop stage escalates
        self._refused: ChildRefused | None = None

    # --- lifecycle -----------------------------------------------------------

    def run(self) -> int:
        """Start the children and watch them; return the exit code for the parent."""
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)}
        previous_wakeup = signal.set_wakeup_fd(wake_write)
        try:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
            # A handler (even one doing nothing) makes a child's exit write to the wake-up pipe.
            signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
            log_event(logger, logging.INFO, "outbox.supervisor_started", processes=len(self.slots), once=self.once)
            for slot in self.slots:
                self._start(slot)
            while self._step():
                self._wait(wake_read)
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(wake_read)
            os.close(wake_write)
            self._kill_all()  # only after an error here: otherwise none is left
        code = self._exit_code()
        log_event(logger, logging.INFO, "outbox.supervisor_stopped", exit_code=code)
        if self._refused is not None:
            raise self._refused
        return code

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._pending_signals.append(signum)

    def _step(self) -> bool:
        """Act on what happened since the last look; False once every child is gone for good."""
        while self._pending_signals:
            self._escalate(self._pending_signals.pop(0), reason="signal")
        now = time.monotonic()
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is not None:
                self._child_exited(slot, now)
            if slot.restart_at is not None and slot.restart_at <= now and not self._stopping:
                self._start(slot)
        if self._deadline is not None and now >= self._deadline:
            self._escalate(signal.SIGTERM, reason="timeout")
        return any(slot.process is not None or slot.restart_at is not None for slot in self.slots)

    @property
    def _stopping(self) -> bool:
        return self._stop_signals > 0

    def _wait(self, wake_read: int) -> None:
        due = [slot.restart_at for slot in self.slots if slot.restart_at is not None]
        if self._deadline is not None:
            due.append(self._deadline)
        timeout = min([IDLE_WAKE, *(moment - time.monotonic() for moment in due)])
        select.select([wake_read], [], [], max(0.0, timeout))
        try:
            while os.read(wake_read, 512):
                pass
        except BlockingIOError:
            pass

    # --- children ------------------------------------------------------------

    def _start(self, slot: Slot) -> None:
        slot.restart_at = None
        # Its own process group: a terminal's Ctrl-C signals the parent only, which forwards it once.
        slot.process = subprocess.Popen(self.command, env=self.env, process_group=0)
        slot.started_at = time.monotonic()
        self.starts += 1
        log_event(logger, logging.INFO, "outbox.worker_process_started", slot=slot.number, pid=slot.process.pid)

    def _child_exited(self, slot: Slot, now: float) -> None:
        process, slot.process = slot.process, None
        returncode = process.returncode
        slot.last_code = exit_code(returncode)
        if self._stop_signals == 1 and returncode in (-signal.SIGTERM, -signal.SIGINT):
            # Stopped by the forwarded signal before the worker installed its handler, which it
            # does before its first claim: nothing was in hand, so this is a clean stop.
            slot.last_code = 0
        if returncode == USAGE_ERROR and not self._stopping:
            self._refused = ChildRefused(slot.number, returncode)
            self._escalate(signal.SIGTERM, reason="usage_error")
            return
        if self._stopping or (self.once and returncode == 0):
            return  # asked to stop, or done draining: its code counts in the parent's
        if self.once:
            # Not restarted: --once is one pass. Its code counts in the parent's, and the other
            # children take its rows once its heartbeat goes stale (worker.py, _once_should_wait).
            self._log_death(slot, process, now)
            return
        slot.quick_deaths = 1 if now - slot.started_at >= HEALTHY_AFTER else slot.quick_deaths + 1
        delay = restart_delay(slot.quick_deaths)
        slot.restart_at = now + delay
        self._log_death(slot, process, now, restart_in_s=delay)
        slot.last_code = None  # handled by the restart: the parent's exit code is about how it stops

    def _log_death(self, slot: Slot, process: subprocess.Popen, now: float, **restart: float) -> None:
        log_event(
            logger, logging.ERROR, "outbox.worker_process_died", slot=slot.number, pid=process.pid,
            exit_code=slot.last_code, **_signal_name(process.returncode), ran_s=round(now - slot.started_at, 1),
            **restart,
        )  # fmt: skip

    def _escalate(self, signum: int, *, reason: str) -> None:
        """One step further towards stopping: graceful, then abort, then SIGKILL."""
        self._stop_signals += 1
        for slot in self.slots:
            slot.restart_at = None
        if self._stop_signals == 1:
            log_event(logger, logging.INFO, "outbox.supervisor_stopping", signal=signum, reason=reason)
            self._deadline = time.monotonic() + self.stop_timeout
            self._signal_children(signum)
        elif self._stop_signals == 2:
            log_event(logger, logging.WARNING, "outbox.supervisor_abort", signal=signum, reason=reason)
            self._deadline = time.monotonic() + ABORT_GRACE
            self._signal_children(signum)
        else:
            log_event(logger, logging.WARNING, "outbox.supervisor_kill", reason=reason)
            self._deadline = None
            self._signal_children(signal.SIGKILL)

    def _signal_children(self, signum: int) -> None:
        for slot in self.slots:
            if slot.process is not None:
                try:
                    slot.process.send_signal(signum)
                except OSError as exc:  # exited meanwhile; reaped at the next look
                    if exc.errno != errno.ESRCH:
                        raise

    def _kill_all(self) -> None:
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is None:
                slot.process.kill()
                slot.process.wait()

    def _exit_code(self) -> int:
        """1 after an abort, as a lone worker's; else the worst child's code (0: all stopped or drained cleanly)."""
        if self._stop_signals >= 2 and self._refused is None:
            return 1
        return max(slot.last_code or 0 for slot in self.slots)
