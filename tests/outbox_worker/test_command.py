import subprocess
import sys

import pytest

from tests.processes import PROJECT_ROOT, worker_env


@pytest.mark.parametrize("option,value", [("--batch-size", "0"), ("--poll-interval", "-1"), ("--lease-seconds", "x")])
def test_bad_options_exit_non_zero_with_a_readable_message(option, value):
    result = subprocess.run(
        [sys.executable, "manage.py", "outbox_worker", "--once", option, value],
        cwd=PROJECT_ROOT,
        env=worker_env(smtp_port=1),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert f"argument {option}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.django_db
def test_once_with_nothing_due_exits_cleanly(capsys):
    from django.core.management import call_command

    call_command("outbox_worker", "--once")

    assert "nothing due" in capsys.readouterr().out
