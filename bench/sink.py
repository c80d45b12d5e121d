"""A fast SMTP sink in its own process: accepts everything, logs every accept.

Minimal asyncio protocol (no aiosmtpd per-command machinery) so that the sink
is never the bottleneck of a throughput run. Each accepted message appends
`A <epoch> <connection> <Message-ID>` to the log; each new connection appends
`C <epoch> <connection>`. The driver reads that log to count messages,
connections and duplicates, and to time commit-to-accept latency.

Modes:
  --reply-delay S     wait S seconds before every reply (a slow provider)
  --greeting-delay S  wait S seconds before the 220 greeting only
  --silent            accept TCP connections and never say a word (a hung server)
"""

import argparse
import asyncio
import re
import signal
import time

MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)


class Sink:
    def __init__(self, log_path: str, reply_delay: float, greeting_delay: float, silent: bool) -> None:
        self.log = open(log_path, "a", buffering=1 << 16)
        self.reply_delay = reply_delay
        self.greeting_delay = greeting_delay
        self.silent = silent
        self.connections = 0

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

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.sink.connections += 1
        self.conn_id = self.sink.connections
        self.sink.write(f"C {time.time():.6f} {self.conn_id}\n")
        if self.sink.silent:
            return
        delay = self.sink.greeting_delay or self.sink.reply_delay
        self.reply(b"220 127.0.0.1 bench sink ESMTP", delay)

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
                self.reply(b"250 2.0.0 OK queued", accepted=found.group(1) if found else b"-")
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
                self.reply(b"221 2.0.0 Bye")
                if self.transport is not None:
                    self.loop.call_later(self.sink.reply_delay, self.transport.close)
            elif verb in (b"HELO", b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                self.reply(b"250 OK")
            else:
                self.reply(b"502 5.5.2 Command not recognised")

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--reply-delay", type=float, default=0.0)
    parser.add_argument("--greeting-delay", type=float, default=0.0)
    parser.add_argument("--silent", action="store_true")
    args = parser.parse_args()
    sink = Sink(args.log, args.reply_delay, args.greeting_delay, args.silent)
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
