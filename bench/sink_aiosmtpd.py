"""The same SMTP sink as bench/sink.py, built on aiosmtpd (the server the issue's reference figures used).

Same log format: `C <epoch> <connection>` per connection, `A <epoch> <connection> <Message-ID>`
per accepted message. No delay modes: used only to compare throughput on a heavier sink.
"""

import argparse
import asyncio
import signal
import time

from aiosmtpd.smtp import SMTP

from bench.sink import MESSAGE_ID


class Handler:
    def __init__(self, log) -> None:
        self.log = log

    async def handle_DATA(self, server, session, envelope):
        body = envelope.original_content or b""
        header_end = body.find(b"\r\n\r\n")
        found = MESSAGE_ID.search(body, 0, header_end if header_end >= 0 else len(body))
        mid = found.group(1).decode("ascii", "replace") if found else "-"
        self.log.write(f"A {time.time():.6f} {id(session)} {mid}\n")
        return "250 2.0.0 OK queued"


class LoggingSMTP(SMTP):
    def connection_made(self, transport) -> None:
        self.event_handler.log.write(f"C {time.time():.6f} {id(self)}\n")
        super().connection_made(transport)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    args, _ignored = parser.parse_known_args()
    log = open(args.log, "a", buffering=1 << 16)
    handler = Handler(log)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: LoggingSMTP(handler, hostname="127.0.0.1"), "127.0.0.1", args.port)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    async def flusher() -> None:
        while True:
            await asyncio.sleep(0.02)
            log.flush()

    flush_task = asyncio.create_task(flusher())
    async with server:
        await stop.wait()
    flush_task.cancel()
    log.flush()


if __name__ == "__main__":
    asyncio.run(main())
