"""Real SMTP servers for tests: aiosmtpd in a thread, scriptable replies."""

import asyncio
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message

from aiosmtpd.controller import Controller

from tests.child_django import free_port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    peer: tuple = ()

    @property
    def message(self) -> Message:
        return message_from_bytes(self.data)


@dataclass
class RecordingHandler:
    """Accepts mail and records it; `replies` scripts the answers to DATA.

    Each queued reply (e.g. "451 4.7.1 try later") answers one DATA command,
    then the server goes back to accepting. `rcpt_replies` maps an address to
    the reply its RCPT gets.
    """

    replies: deque[str] = field(default_factory=deque)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    data_commands: int = 0
    condition: threading.Condition = field(default_factory=threading.Condition)
    # When `gate` is set to an unset Event, each DATA waits for it after
    # setting `entered`: a test can act while a send is in flight.
    gate: threading.Event | None = None
    entered: threading.Event = field(default_factory=threading.Event)
    at_gate: int = 0
    gate_skip: int = 0  # this many DATA commands pass before the gate applies

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.condition:
            self.data_commands += 1
            gated = self.gate is not None and self.data_commands > self.gate_skip
            if gated:
                self.at_gate += 1
                self.condition.notify_all()
        if gated:
            self.entered.set()
            await asyncio.get_running_loop().run_in_executor(None, self.gate.wait)
        with self.condition:
            if self.replies:
                reply = self.replies.popleft()
                self.condition.notify_all()
                return reply
            self.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content, tuple(session.peer))
            )
            self.condition.notify_all()
        return "250 Message accepted for delivery"

    def wait_at_gate(self, count: int, timeout: float = 60.0) -> None:
        """Block until `count` DATA commands are waiting at the gate."""
        with self.condition:
            if not self.condition.wait_for(lambda: self.at_gate >= count, timeout=timeout):
                raise AssertionError(f"{self.at_gate} of {count} sends reached the gate")

    def wait_for(self, count: int, timeout: float = 60.0) -> list[Received]:
        """Block until `count` messages were accepted (or fail after `timeout`)."""
        with self.condition:
            if not self.condition.wait_for(lambda: len(self.received) >= count, timeout=timeout):
                raise AssertionError(f"SMTP server received {len(self.received)} of {count} messages")
            return list(self.received)

    def message_ids(self) -> list[str]:
        with self.condition:
            return [r.message["Message-ID"] for r in self.received]

    def wait_for_distinct(self, count: int, timeout: float = 60.0) -> list[Received]:
        """Block until `count` different Message-IDs were accepted."""
        with self.condition:
            done = self.condition.wait_for(
                lambda: len({r.message["Message-ID"] for r in self.received}) >= count, timeout=timeout
            )
            if not done:
                raise AssertionError(f"SMTP server received fewer than {count} distinct messages")
            return list(self.received)


class SMTPServer:
    def __init__(self, handler: RecordingHandler | None = None) -> None:
        self.handler = handler or RecordingHandler()
        # aiosmtpd cannot be told port 0, so it gets a port that is free right now.
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=free_port())

    def start(self) -> "SMTPServer":
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    @property
    def port(self) -> int:
        return self.controller.port

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"


class SilentServer:
    """A TCP server that accepts connections and never says a word.

    Stands in for a blocked or hung SMTP server: a client waits for the
    greeting until its timeout. Counts the connections it accepted.
    """

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.connections: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def start(self) -> "SilentServer":
        self.sock.settimeout(0.1)
        self._thread.start()
        return self

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _addr = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(conn)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        for conn in self.connections:
            conn.close()
        self.sock.close()

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]
