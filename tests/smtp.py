"""Real SMTP servers for tests: aiosmtpd in a thread, scriptable replies."""

import asyncio
import socket
import ssl
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message

import trustme
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
    the reply its RCPT gets. `mail_replies` scripts MAIL FROM the same way
    (e.g. "553 5.7.1 sender address rejected"), and each of `drops_at_mail`
    hangs up on a MAIL FROM without a word, as a server that dropped an idle
    connection does.
    """

    replies: deque[str] = field(default_factory=deque)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    mail_replies: deque[str] = field(default_factory=deque)
    drops_at_mail: int = 0
    mail_commands: int = 0
    received: list[Received] = field(default_factory=list)
    data_commands: int = 0
    condition: threading.Condition = field(default_factory=threading.Condition)
    # When `gate` is set to an unset Event, each DATA waits for it after
    # setting `entered`: a test can act while a send is in flight.
    gate: threading.Event | None = None
    entered: threading.Event = field(default_factory=threading.Event)
    at_gate: int = 0
    gate_skip: int = 0  # this many DATA commands pass before the gate applies

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        with self.condition:
            self.mail_commands += 1
            if self.drops_at_mail:
                self.drops_at_mail -= 1
                server.transport.close()
                return "421 4.3.2 gone"  # never reaches the client: the connection is closed
            if self.mail_replies:
                return self.mail_replies.popleft()
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

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
    """aiosmtpd on 127.0.0.1; `smtp_parameters` go to aiosmtpd's SMTP (tls_context, authenticator …)."""

    def __init__(self, handler: RecordingHandler | None = None, **smtp_parameters: object) -> None:
        self.handler = handler or RecordingHandler()
        # aiosmtpd cannot be told port 0, so it gets a port that is free right now.
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=free_port(), **smtp_parameters)

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


@dataclass
class Certificates:
    """TLS material made at test time: a CA the client trusts, and server contexts signed by it or not."""

    ca: trustme.CA
    valid: ssl.SSLContext  # server: a certificate for 127.0.0.1 from `ca`
    expired: ssl.SSLContext  # server: from `ca`, but its validity ended yesterday
    self_signed: ssl.SSLContext  # server: from a CA the client has never heard of

    def client_context(self) -> ssl.SSLContext:
        """A client context that verifies certificates and trusts only `ca`."""
        context = ssl.create_default_context()
        context.load_verify_locations(cadata=self.ca.cert_pem.bytes().decode())
        return context


def make_certificates() -> Certificates:
    ca, stranger = trustme.CA(), trustme.CA()
    now = datetime.now(UTC)

    def server_context(cert: trustme.LeafCert) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(context)
        return context

    return Certificates(
        ca=ca,
        valid=server_context(ca.issue_cert("127.0.0.1")),
        expired=server_context(
            ca.issue_cert("127.0.0.1", not_before=now - timedelta(days=30), not_after=now - timedelta(days=1))
        ),
        self_signed=server_context(stranger.issue_cert("127.0.0.1")),
    )


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
