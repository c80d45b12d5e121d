"""Run Procfile processes together in one terminal, and stop them gracefully.

    python scripts/procfile.py web worker

Each process's output is printed with its name (`web.1 | ...`). Ctrl-C (or
SIGTERM) sends SIGTERM to every process once and waits for each to finish on
its own terms: gunicorn finishes the requests in flight (graceful_timeout),
the outbox worker finishes the message in hand and hands back the rest. A
second Ctrl-C sends SIGTERM again (the worker then exits at once; its row
comes back when the lease ends); a third kills what is left.

honcho, which scripts/run used before, SIGKILLs every process 5 s after the
first signal (honcho.manager.KILL_WAIT, not configurable), cutting a slow
send short and leaving its row `sending` until the lease expires.

Standard library only: it runs before and without any dev tools.
"""

import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def read_procfile(path: Path) -> dict[str, str]:
    """Return {name: command} for every `name: command` line of `path`."""
    entries = {}
    for line in path.read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() and not name.startswith("#"):
            entries[name.strip()] = command.strip()
    return entries


def _pipe_output(name: str, stream, lock: threading.Lock) -> None:
    for raw in iter(stream.readline, b""):
        text = raw.decode(errors="replace").rstrip("\n")
        with lock:
            sys.stdout.write(f"{time.strftime('%H:%M:%S')} {name:<8} | {text}\n")
            sys.stdout.flush()


class Runner:
    def __init__(self, *, commands: dict[str, str]) -> None:
        self.commands = commands
        self.processes: dict[str, subprocess.Popen] = {}
        self.signals_received = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def start(self) -> None:
        for name, command in self.commands.items():
            argv = shlex.split(command)
            argv[0] = shutil.which(argv[0]) or argv[0]
            # A session of its own: the terminal's Ctrl-C reaches only this
            # runner, which then signals each process exactly once.
            process = subprocess.Popen(
                argv,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            self.processes[f"{name}.1"] = process
            threading.Thread(target=_pipe_output, args=(f"{name}.1", process.stdout, self.lock), daemon=True).start()
            self.say(f"started with pid {process.pid}: {command}", name=f"{name}.1")

    def say(self, text: str, *, name: str = "runner") -> None:
        with self.lock:
            sys.stdout.write(f"{time.strftime('%H:%M:%S')} {name:<8} | {text}\n")
            sys.stdout.flush()

    def on_signal(self, signum: int, _frame: object) -> None:
        self.signals_received += 1
        self.stopping.set()
        kill = self.signals_received >= 3
        self.say(
            "killing what is left"
            if kill
            else f"{signal.Signals(signum).name}: stopping (each process finishes its work; Ctrl-C again to hurry)"
        )
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)

    def wait(self) -> int:
        """Block until every process has exited; return the exit code for the whole run."""
        first_failure = None
        while any(p.poll() is None for p in self.processes.values()):
            for name, process in self.processes.items():
                code = process.poll()
                if code is not None and not self.stopping.is_set():
                    # One process ended on its own: stop the others, as honcho does.
                    self.say(f"{name} exited with {code}; stopping the others")
                    first_failure = code or 1
                    self.on_signal(signal.SIGTERM, None)
            time.sleep(0.1)
        for name, process in self.processes.items():
            self.say(f"exited with {process.returncode}", name=name)
        codes = [p.returncode for p in self.processes.values()]
        return first_failure or next((c for c in codes if c != 0), 0)


def main(argv: list[str]) -> int:
    procfile = read_procfile(ROOT / "Procfile")
    names = argv or ["web", "worker"]
    unknown = [name for name in names if name not in procfile]
    if unknown:
        sys.stderr.write(f"error: no such Procfile entry: {', '.join(unknown)}\n")
        return 2
    runner = Runner(commands={name: procfile[name] for name in names})
    signal.signal(signal.SIGINT, runner.on_signal)
    signal.signal(signal.SIGTERM, runner.on_signal)
    runner.start()
    return runner.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
