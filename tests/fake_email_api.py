"""A fake HTTP email API (Postmark's wire format) in a thread, with scripted replies."""

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class ApiRequest:
    path: str
    headers: dict[str, str]
    json: dict


@dataclass
class FakeEmailApi:
    """Answers POST /email like Postmark; `replies` scripts (status, body) per request, then 200."""

    replies: deque[tuple[int, dict]] = field(default_factory=deque)
    requests: list[ApiRequest] = field(default_factory=list)

    def start(self) -> "FakeEmailApi":
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                api.requests.append(ApiRequest(self.path, dict(self.headers), body))
                status, reply = (
                    api.replies.popleft()
                    if api.replies
                    else (
                        200,
                        {
                            "To": body["To"],
                            "SubmittedAt": "2026-01-01T00:00:00Z",
                            "MessageID": "pm-1",
                            "ErrorCode": 0,
                            "Message": "OK",
                        },
                    )
                )
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"
