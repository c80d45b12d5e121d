"""Ctrl-C under scripts/run: the worker finishes the email it is sending, then everything exits 0.

The runner (scripts/procfile.py, what scripts/run execs) starts the Procfile's
web and worker lines as real processes on a SQLite file, with a real SMTP
server that holds the DATA command until the test lets it go.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from tests.child_django import ROOT, clean_env, free_port, run_manage
from tests.processes import wait_until
from tests.smtp import RecordingHandler, SMTPServer

SLOW_SEND_SECONDS = 6


@pytest.fixture
def gated_smtp():
    handler = RecordingHandler(gate=threading.Event())
    server = SMTPServer(handler).start()
    yield server
    handler.gate.set()
    server.stop()


def post_enrollment(port: int) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/enrollments/",
        data=json.dumps({"product": 1, "name": "Ana Souza", "email": "ana@example.com"}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except OSError:
        return 0


def test_sigint_to_the_runner_lets_the_worker_finish_the_message_in_hand(gated_smtp, tmp_path):
    database = tmp_path / "db.sqlite3"
    port = free_port()
    env = clean_env(
        DEBUG="true",
        DATABASE_URL=f"sqlite:///{database}",
        EMAIL_URL=gated_smtp.url,
        PORT=str(port),
        OUTBOX_POLL_INTERVAL="0.2",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    )
    for command in (["migrate", "--noinput"], ["seed_demo"]):
        result = run_manage(*command, env=env)
        assert result.returncode == 0, result.stderr
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        runner = subprocess.Popen(
            [sys.executable, "scripts/procfile.py", "web", "worker"], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    try:
        wait_until(lambda: post_enrollment(port) == 201 or runner.poll() is not None, what="web to answer 201")
        assert runner.poll() is None, log.read_text()
        gated_smtp.handler.wait_at_gate(1)  # the worker is inside DATA now

        runner.send_signal(signal.SIGINT)  # Ctrl-C
        # The stop has reached the worker while its send is still held.
        wait_until(lambda: "outbox.worker_stopping" in log.read_text(), what="the worker to hear the stop")
        # A slow provider: the send outlasts honcho's fixed 5 s before SIGKILL
        # (the scenario under test, not synchronisation).
        threading.Event().wait(SLOW_SEND_SECONDS)
        assert runner.poll() is None, log.read_text()
        gated_smtp.handler.gate.set()

        code = runner.wait(timeout=120)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()

    output = log.read_text()
    assert code == 0, output
    assert "worker.1 | exited with 0" in output
    assert "web.1    | exited with 0" in output
    # One SIGTERM each: a second would have made the worker drop the message.
    assert "outbox.worker_abort" not in output
    assert len(gated_smtp.handler.received) == 1
    with sqlite3.connect(database) as db:
        statuses = [row[0] for row in db.execute("SELECT status FROM outbox_worker_outboxmessage")]
    assert statuses == ["sent"], output
