"""The --processes parent: what its children are told, how it waits to restart them, and when it refuses to."""

import signal
import sys

import pytest

from outbox_worker.management.commands.outbox_worker import Command, child_arguments
from outbox_worker.supervisor import ChildRefused, Supervisor, exit_code, restart_delay
from tests.processes import PROJECT_ROOT, worker_env


def parse(*argv: str) -> dict:
    return vars(Command().create_parser("manage.py", "outbox_worker").parse_args(list(argv)))


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--once"],
        ["--once", "--batch-size", "7", "--poll-interval", "0.5", "--lease-seconds", "90", "--concurrency", "3"],
        ["--no-notify", "--queues", "mail,reports"],
        ["--queues", ""],
        ["--pythonpath", "/srv/app"],
    ],
)
def test_each_child_gets_the_parents_options_and_one_process(argv):
    parent = parse("--processes", "3", *argv)

    child = parse(*child_arguments(parent, processes=3)[1:])

    assert (child["processes"], child["skip_checks"]) == (1, True)  # the parent ran the checks
    same = {k: v for k, v in parent.items() if k not in ("processes", "skip_checks")}
    assert {k: v for k, v in child.items() if k not in ("processes", "skip_checks")} == same


def test_the_rate_is_shared_between_the_children():
    parent = parse("--processes", "4", "--rate", "10")

    child = parse(*child_arguments(parent, processes=4)[1:])

    assert child["rate"] == 2.5


def test_every_option_of_the_command_reaches_the_children():
    """A new option must be passed on by child_arguments (or knowingly left out here)."""
    parser = Command().create_parser("manage.py", "outbox_worker")
    ours = {action.dest for action in parser._actions if action.option_strings and action.dest != "help"}
    django_defaults = {"verbosity", "settings", "traceback", "no_color", "force_color", "skip_checks", "version"}
    passed = {"once", "no_notify", "batch_size", "poll_interval", "lease_seconds", "concurrency", "pythonpath",
              "rate", "queues", "processes"}  # fmt: skip
    assert ours - django_defaults == passed


def test_a_child_that_keeps_dying_waits_longer_each_time_up_to_30_seconds():
    assert [restart_delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


@pytest.mark.parametrize("returncode,code", [(0, 0), (1, 1), (-signal.SIGKILL, 137), (-signal.SIGTERM, 143)])
def test_a_childs_exit_is_reported_as_a_shell_would(returncode, code):
    assert exit_code(returncode) == code


def test_a_usage_error_in_the_children_stops_the_parent_instead_of_restarting_them(capfd):
    # A bad option that reaches the children (the parent's own parser would refuse it first).
    command = [sys.executable, str(PROJECT_ROOT / "manage.py"), "outbox_worker", "--batch-size", "0"]
    handler = signal.getsignal(signal.SIGTERM)
    supervisor = Supervisor(command=command, processes=2, once=False, stop_timeout=60, env=worker_env(smtp_port=1))

    with pytest.raises(ChildRefused) as refused:
        supervisor.run()

    assert refused.value.returncode == 2
    assert str(refused.value).startswith("worker process ") and "\n" not in str(refused.value)
    assert supervisor.starts == 2  # no restart loop
    err = capfd.readouterr().err
    assert "argument --batch-size" in err and "Traceback" not in err
    assert signal.getsignal(signal.SIGTERM) is handler  # the parent's handlers are put back
