"""A fast SMTP sink in its own process: accepts everything, logs every accept.

Minimal asyncio protocol (no aiosmtpd per-command machinery) so that the sink
is never the bottleneck of a throughput run. Each accepted message appends
`A <epoch> <connection> <Message-ID>` to the log; each new connection appends
`C <epoch> <connection>`. The driver reads that log to count messages,
connections and duplicates, and to time commit-to-accept latency.

Modes:
  --reply-delay S     wait S seconds before every reply (a slow provider)
  --greeting-delay S  wait S seconds before the 220 greeting only
  --accept-delay S    wait S seconds before the 250 that accepts a message, as an MTA
                      that writes and fsyncs its queue file first (see MTA_ACCEPT_DELAY)
  --silent            accept TCP connections and never say a word (a hung server)
  --fail-rate F       answer a fraction F of RCPTs with a transient error (421 and close, or 451)
  --greylist F --greylist-seconds S
                      a fraction F of recipients (chosen by a hash of the address) get 451 at
                      RCPT until S seconds after the sink first saw them; the first-seen times
                      are logged (`G <epoch> <rcpt>`) and re-read on start, so a restarted sink
                      remembers them
  --resolve-pids      log `P <connection> <pid>`: the local process that opened each connection
                      (the chaos soak tells sends by a killed worker from the others), and
                      `L <connection> quit|server|client`: who ended it (client = no QUIT)
"""

import argparse
import asyncio
import os
import random
import re
import signal
import time
import zlib
from pathlib import Path

MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)
RCPT_ADDRESS = re.compile(rb"<([^>]*)>")

# A local Postfix answers 250 to the end of DATA only after its cleanup daemon
# has written the queue file and fsync'ed it: about 1-3 ms on a local SSD, more
# on network disks. The drain benchmarks use 2 ms so the sink is never faster
# than the cheapest real MTA (a sink that answers at once rewards sequential
# senders and hides what parallel connections buy).
MTA_ACCEPT_DELAY = 0.002


class Sink:
    def __init__(self, log_path: str, args: argparse.Namespace) -> None:
        self.first_seen = self._greylist_state(log_path) if args.greylist else {}
        self.log = open(log_path, "a", buffering=1 << 16)
        self.reply_delay = args.reply_delay
        self.greeting_delay = args.greeting_delay
        self.accept_delay = args.accept_delay
        self.silent = args.silent
        self.fail_rate = args.fail_rate
        self.greylist = args.greylist
        self.greylist_seconds = args.greylist_seconds
        self.resolve_pids = args.resolve_pids
        self.connections = 0

    @staticmethod
    def _greylist_state(log_path: str) -> dict[bytes, float]:
        seen: dict[bytes, float] = {}
        path = Path(log_path)
        if path.exists():
            for line in path.read_text().splitlines():
                parts = line.split(" ")
                if parts[0] == "G":
                    seen.setdefault(parts[2].encode(), float(parts[1]))
        return seen

    def rcpt_error(self, line: bytes) -> bytes | None:
        """The transient error to answer this RCPT with, or None to accept it."""
        if self.greylist:
            found = RCPT_ADDRESS.search(line)
            rcpt = found.group(1).lower() if found else b""
            if zlib.crc32(rcpt) % 10_000 < self.greylist * 10_000:
                now = time.time()
                first = self.first_seen.setdefault(rcpt, now)
                if first == now:
                    self.write(f"G {now:.6f} {rcpt.decode('ascii', 'replace')}\n")
                if now < first + self.greylist_seconds:
                    return b"451 4.7.1 Greylisted, try again later"
        if self.fail_rate and random.random() < self.fail_rate:
            return random.choice([b"421 4.3.2 Service shutting down", b"451 4.3.0 Temporary failure"])
        return None

    def write(self, line: str) -> None:
        self.log.write(line)

    async def flusher(self) -> None:
        while True:
            await asyncio.sleep(0.02)
            self.log.flush()


class SMTPProtocol(asyncio.Protocol):
    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.buf = bytearray()
        self.in_data = False
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.ended_by = "client"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.sink.connections += 1
        # With the pid, connection names stay unique when a restarted sink appends to the same log.
        self.conn_id = f"{os.getpid()}.{self.sink.connections}"
        self.sink.write(f"C {time.time():.6f} {self.conn_id}\n")
        if self.sink.resolve_pids:
            peer_port = transport.get_extra_info("peername")[1]
            self.loop.run_in_executor(None, self._log_pid, peer_port)
        if self.sink.silent:
            return
        delay = self.sink.greeting_delay or self.sink.reply_delay
        self.reply(b"220 127.0.0.1 bench sink ESMTP", delay)

    def _log_pid(self, peer_port: int) -> None:
        import psutil

        for conn in psutil.net_connections(kind="tcp4"):
            if conn.laddr and conn.laddr.port == peer_port and conn.pid:
                self.sink.write(f"P {self.conn_id} {conn.pid}\n")
                return
        self.sink.write(f"P {self.conn_id} 0\n")

    def reply(self, text: bytes, delay: float | None = None, accepted: bytes | None = None) -> None:
        delay = self.sink.reply_delay if delay is None else delay
        if delay:
            self.loop.call_later(delay, self._send, text, accepted)
        else:
            self._send(text, accepted)

    def _send(self, text: bytes, accepted: bytes | None) -> None:
        if accepted is not None:
            self.sink.write(f"A {time.time():.6f} {self.conn_id} {accepted.decode('ascii', 'replace')}\n")
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(text + b"\r\n")

    def data_received(self, data: bytes) -> None:
        if self.sink.silent:
            return
        self.buf += data
        while True:
            if self.in_data:
                end = self.buf.find(b"\r\n.\r\n")
                if end < 0:
                    return
                body = bytes(self.buf[:end])
                del self.buf[: end + 5]
                self.in_data = False
                header_end = body.find(b"\r\n\r\n")
                found = MESSAGE_ID.search(body, 0, header_end if header_end >= 0 else len(body))
                self.reply(
                    b"250 2.0.0 OK queued",
                    self.sink.reply_delay + self.sink.accept_delay,
                    accepted=found.group(1) if found else b"-",
                )
                continue
            end = self.buf.find(b"\r\n")
            if end < 0:
                return
            line = bytes(self.buf[:end])
            del self.buf[: end + 2]
            verb = line[:4].upper()
            if verb == b"EHLO":
                self.reply(b"250-127.0.0.1\r\n250-8BITMIME\r\n250 SIZE 33554432")
            elif verb == b"DATA":
                self.in_data = True
                # The body may already be in the buffer; a leading "." line means an empty body.
                self.reply(b"354 End data with <CR><LF>.<CR><LF>")
                self.buf[:0] = b"\r\n"
            elif verb == b"QUIT":
                self.ended_by = "quit"
                self.reply(b"221 2.0.0 Bye")
                if self.transport is not None:
                    self.loop.call_later(self.sink.reply_delay, self.transport.close)
            elif verb == b"RCPT" and (error := self.sink.rcpt_error(line)) is not None:
                self.reply(error)
                if error.startswith(b"421") and self.transport is not None:
                    self.ended_by = "server"
                    self.loop.call_later(self.sink.reply_delay, self.transport.close)
            elif verb in (b"HELO", b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                self.reply(b"250 OK")
            else:
                self.reply(b"502 5.5.2 Command not recognised")

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.sink.resolve_pids:
            # "client": the client went away without QUIT (a killed worker, or one that dropped the connection).
            self.sink.write(f"L {self.conn_id} {self.ended_by}\n")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--reply-delay", type=float, default=0.0)
    parser.add_argument("--greeting-delay", type=float, default=0.0)
    parser.add_argument("--accept-delay", type=float, default=0.0)
    parser.add_argument("--silent", action="store_true")
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--greylist", type=float, default=0.0)
    parser.add_argument("--greylist-seconds", type=float, default=60.0)
    parser.add_argument("--resolve-pids", action="store_true")
    args = parser.parse_args()
    sink = Sink(args.log, args)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTPProtocol(sink), "127.0.0.1", args.port, backlog=512)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    flusher = asyncio.create_task(sink.flusher())
    async with server:
        await stop.wait()
    flusher.cancel()
    sink.log.flush()


if __name__ == "__main__":
    asyncio.run(main())
