"""Shared plumbing for the benchmarks: databases, the SMTP sink, child processes, stats."""

import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
LOGS = BENCH / "logs"
DOCS = ROOT / "docs"
PY = sys.executable
# Client-side limit for one HTTP request in benchmark 1.
HTTP_TIMEOUT = 30.0
PG_URL = os.environ.get("BENCH_PG_URL", "postgres://root@127.0.0.1:5432").rstrip("/")
OURS = "bench.oursite.settings"
REFS = "bench.refs.settings"
# BENCH_DB_SUFFIX gives a second checkout its own databases, so two benchmark runs never share tables.
DB_SUFFIX = os.environ.get("BENCH_DB_SUFFIX", "")
DATABASES = {
    OURS: f"bench_outbox{DB_SUFFIX}",
    REFS: f"bench_refs{DB_SUFFIX}",
    "claim_small": f"bench_claim_small{DB_SUFFIX}",
    "claim_big": f"bench_claim_big{DB_SUFFIX}",
    # Issue 8's enqueue benchmark: bench_outbox with the outbox's indexes as they were before 0008_trim_indexes.
    "before": f"bench_outbox_before{DB_SUFFIX}",
}

# --- PostgreSQL ----------------------------------------------------------------


def pg_connect(dbname: str = "postgres"):
    conn = psycopg2.connect(f"{PG_URL}/{dbname}")
    conn.autocommit = True
    return conn


def ensure_database(name: str) -> bool:
    """Create database `name` if missing (only our own bench_* names); return True if created."""
    assert name.startswith("bench_"), name
    conn = pg_connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            if cursor.fetchone():
                return False
            cursor.execute(f'CREATE DATABASE "{name}"')
            return True
    finally:
        conn.close()


def pg_version() -> str:
    conn = pg_connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute("SHOW server_version")
            return cursor.fetchone()[0]
    finally:
        conn.close()


# --- child processes -------------------------------------------------------------


def child_env(settings: str, smtp_port: int | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = settings
    env["PYTHONPATH"] = str(ROOT)
    env["BENCH_OURS_DB_URL"] = f"{PG_URL}/{DATABASES[OURS]}"
    env["BENCH_REFS_DB_URL"] = f"{PG_URL}/{DATABASES[REFS]}"
    env.pop("DATABASE_URL", None)
    env.pop("EMAIL_URL", None)
    if smtp_port is not None:
        env["BENCH_SMTP_PORT"] = str(smtp_port)
    env.update(extra)
    return env


def task(settings: str, *args: str, smtp_port: int | None = None, timeout: float = 900) -> dict:
    """Run `python -m bench.tasks ...` with `settings`; return its JSON answer."""
    out = subprocess.run(
        [PY, "-m", "bench.tasks", *args],
        cwd=ROOT,
        env=child_env(settings, smtp_port),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"bench.tasks {' '.join(args)} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def manage_cmd(*args: str) -> list[str]:
    return [PY, "manage.py", *args]


class Proc:
    """A child process whose output goes to a log file under bench/logs/."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        LOGS.mkdir(exist_ok=True)
        self.name = name
        self.log_path = LOGS / f"{name}.log"
        self.log = open(self.log_path, "w")
        self.started = time.time()
        self.popen = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.ended: float | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        try:
            code = self.popen.wait(timeout)
        finally:
            if self.popen.poll() is not None and self.ended is None:
                self.ended = time.time()
                self.log.close()
        return code

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self.ended is None:
            self.ended = time.time()
        self.log.close()
        return self.popen.returncode


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


# --- the SMTP sink ------------------------------------------------------------------


@dataclass
class Sink:
    """bench/sink.py in its own process, and a reader for its log."""

    name: str
    reply_delay: float = 0.0
    greeting_delay: float = 0.0
    silent: bool = False
    impl: str = "fast"  # "fast" (bench/sink.py) or "aiosmtpd" (bench/sink_aiosmtpd.py)
    # See bench/sink.py: MTA-like accept delay, random transient failures, greylisting, pid lookup.
    accept_delay: float = 0.0
    fail_rate: float = 0.0
    greylist: float = 0.0
    greylist_seconds: float = 60.0
    resolve_pids: bool = False
    port: int = 0
    accepts: list[tuple[float, str]] = field(default_factory=list)
    # (epoch, connection, Message-ID) for every accept, and the process that opened each connection.
    accepts_by_connection: list[tuple[float, str, str]] = field(default_factory=list)
    connection_pids: dict[str, int] = field(default_factory=dict)
    connection_ends: dict[str, str] = field(default_factory=dict)
    connections: int = 0

    def start(self) -> "Sink":
        self.port = free_port()
        self.log_path = LOGS / f"sink-{self.name}.log"
        LOGS.mkdir(exist_ok=True)
        self.log_path.write_text("")
        self._offset = 0
        self._partial = ""
        self.launch()
        # The sink logs a connection for every probe; connect once and count it out.
        time.sleep(0.1)
        self.poll()
        self.connections = 0
        return self

    def launch(self) -> None:
        """Start the sink process on `self.port`, appending to its log (also after `halt()`)."""
        script = ["-m", "bench.sink_aiosmtpd"] if self.impl == "aiosmtpd" else [str(BENCH / "sink.py")]
        argv = [PY, *script, "--port", str(self.port), "--log", str(self.log_path)]
        argv += ["--reply-delay", str(self.reply_delay), "--greeting-delay", str(self.greeting_delay)]
        argv += ["--accept-delay", str(self.accept_delay), "--fail-rate", str(self.fail_rate)]
        argv += ["--greylist", str(self.greylist), "--greylist-seconds", str(self.greylist_seconds)]
        if self.silent:
            argv.append("--silent")
        if self.resolve_pids:
            argv.append("--resolve-pids")
        self.proc = Proc(f"sinkproc-{self.name}", argv, {**os.environ, "PYTHONPATH": str(ROOT)})
        wait_port(self.port)

    def halt(self) -> None:
        """Stop the sink process: connections are refused until `launch()` (an outage)."""
        self.proc.stop()

    def poll(self) -> int:
        with open(self.log_path) as fh:
            fh.seek(self._offset)
            chunk = fh.read()
            self._offset = fh.tell()
        text = self._partial + chunk
        lines = text.split("\n")
        self._partial = lines.pop()
        for line in lines:
            parts = line.split(" ")
            if parts[0] == "A":
                self.accepts.append((float(parts[1]), parts[3]))
                self.accepts_by_connection.append((float(parts[1]), parts[2], parts[3]))
            elif parts[0] == "C":
                self.connections += 1
            elif parts[0] == "P":
                self.connection_pids[parts[1]] = int(parts[2])
            elif parts[0] == "L":
                self.connection_ends[parts[1]] = parts[2]
        return len(self.accepts)

    def wait_for(self, count: int, timeout: float, procs: list[Proc] = ()) -> bool:
        """Wait until `count` accepts; give up at `timeout` or once every process in `procs` exited."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.poll() >= count:
                return True
            if procs and not any(p.alive() for p in procs):
                time.sleep(0.2)
                return self.poll() >= count
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        self.proc.stop()
        self.poll()

    def first_last(self) -> tuple[float, float]:
        times = sorted(t for t, _ in self.accepts)
        return (times[0], times[-1]) if times else (float("nan"), float("nan"))

    def rate(self, skip: int = 0) -> float:
        """Messages per second between the first and the last accept (process start-up excluded)."""
        times = sorted(t for t, _ in self.accepts)[skip:]
        if len(times) < 2:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def duplicates(self) -> int:
        counts = Counter(mid for _, mid in self.accepts)
        return sum(n - 1 for n in counts.values() if n > 1)

    def __enter__(self) -> "Sink":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- features of the worker under test ----------------------------------------------

_HELP: str | None = None


def worker_help() -> str:
    global _HELP
    if _HELP is None:
        out = subprocess.run(
            manage_cmd("outbox_worker", "--help"),
            cwd=ROOT,
            env=child_env(OURS, 2525),
            capture_output=True,
            text=True,
            check=True,
        )
        _HELP = out.stdout
    return _HELP


def worker_flag(*candidates: str) -> str | None:
    """The first of `candidates` that `outbox_worker --help` lists, or None."""
    text = worker_help()
    for flag in candidates:
        if re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text):
            return flag
    return None


# --- stats and results ----------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def machine() -> dict:
    def sh(cmd: str) -> str:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, check=False).stdout.strip()

    return {
        "nproc": sh("nproc"),
        "free_h": sh("free -h"),
        "lscpu_head": sh("lscpu | head"),
        "postgres": pg_version(),
        "python": platform.python_version(),
        "git": sh(f"git -C {ROOT} rev-parse --short HEAD"),
    }


def save(name: str, data: dict) -> Path:
    """Write a compact copy to bench/results/<name>.json (committed) and everything to results/raw/ (not)."""
    (RESULTS / "raw").mkdir(parents=True, exist_ok=True)
    data = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **data}
    (RESULTS / "raw" / f"{name}.json").write_text(json.dumps(data) + "\n")
    path = RESULTS / f"{name}.json"
    write_result(path, data)
    return path


def load(name: str) -> dict | None:
    """A saved result, with its raw samples when this checkout has them."""
    for path in (RESULTS / "raw" / f"{name}.json", RESULTS / f"{name}.json"):
        if path.exists():
            return json.loads(path.read_text())
    return None


# Raw series are kept only as finely as the charts need them: results are committed, and 1,500
# latencies or 350 RSS samples per run made ~11,000 lines of JSON that no reader looks at.
LATENCY_POINTS = 101  # p0, p1, ..., p100
MAX_SAMPLES = 200


def compact_result(data: dict) -> dict:
    """Return `data` with its raw series thinned: sorted latencies to percentiles, samples evenly spaced.

    Every summary (p50, p99, peak RSS, counts) is computed by the benchmark before this, from all points.
    """
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            value = compact_result(value)
        elif key == "latencies_ms" and isinstance(value, list) and len(value) > LATENCY_POINTS:
            value = [round(percentile(value, p), 2) for p in range(LATENCY_POINTS)]
        elif key == "samples" and isinstance(value, list) and len(value) > MAX_SAMPLES:
            out["samples_taken"] = len(value)
            step = (len(value) - 1) / (MAX_SAMPLES - 1)
            value = [value[round(i * step)] for i in range(MAX_SAMPLES)]
        out[key] = value
    return out


def write_result(path: Path, data: dict) -> None:
    """Write a result compactly: objects indented, lists of numbers (or of short lists) on one line."""

    def dump(value: object, indent: str) -> str:
        if isinstance(value, dict) and value:
            inner = indent + "  "
            items = [f"{inner}{json.dumps(k)}: {dump(v, inner)}" for k, v in value.items()]
            return "{\n" + ",\n".join(items) + "\n" + indent + "}"
        if isinstance(value, list) and value and any(isinstance(v, dict) for v in value):
            inner = indent + "  "
            return "[\n" + ",\n".join(inner + dump(v, inner) for v in value) + "\n" + indent + "]"
        return json.dumps(value)

    path.write_text(dump(compact_result(data), "") + "\n")


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def http_load(port: int, path: str, product: int, clients: int, seconds: float, tag: str) -> list[dict]:
    """`clients` threads POST enrollments for `seconds`; each request gets a fresh email address."""
    import http.client
    import json
    import threading

    results: list[dict] = []
    lock = threading.Lock()
    deadline = time.time() + seconds

    def client(index: int) -> None:
        n = 0
        while time.time() < deadline:
            n += 1
            body = json.dumps({"product": product, "name": "Ana Souza", "email": f"{tag}.{index}.{n}@example.com"})
            start = time.perf_counter()
            record = {"start": time.time()}
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)
                conn.request("POST", path, body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                conn.close()
                record["status"] = response.status
            except (OSError, http.client.HTTPException) as exc:
                record["status"] = 0
                record["error"] = type(exc).__name__
            record["latency"] = time.perf_counter() - start
            with lock:
                results.append(record)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


# --- CPU by component ------------------------------------------------------------


class CpuMeter:
    """CPU seconds spent by each part of a benchmark between `start()` and `stop()`.

    On one machine the web, the worker, PostgreSQL, the sink and the load
    clients share the cores, so a throughput ratio alone cannot say who paid.
    `parts` maps a name to a callable returning that part's pids now; a
    process alive at both ends counts its difference, one born in between its
    whole life. A process that ends in between is missed (its CPU is lost).
    """

    def __init__(self, parts: dict[str, Callable[[], set[int]]]) -> None:
        self.parts = parts
        self._before: dict[str, dict[int, float]] = {}

    @staticmethod
    def _times(pids: set[int]) -> dict[int, float]:
        import psutil

        out = {}
        for pid in pids:
            try:
                t = psutil.Process(pid).cpu_times()
                out[pid] = t.user + t.system
            except psutil.Error:
                pass
        return out

    def start(self) -> None:
        self._before = {name: self._times(pids()) for name, pids in self.parts.items()}

    def stop(self) -> dict[str, float]:
        spent = {}
        for name, pids in self.parts.items():
            before = self._before.get(name, {})
            now = self._times(pids() | set(before))
            spent[name] = sum(value - before.get(pid, 0.0) for pid, value in now.items())
        return spent


def process_tree(pid: int) -> set[int]:
    """`pid` and every descendant alive now."""
    import psutil

    try:
        root = psutil.Process(pid)
        return {pid, *(child.pid for child in root.children(recursive=True))}
    except psutil.Error:
        return set()


def postgres_backends(dbname: str) -> dict[int, str]:
    """The backends serving `dbname` now: pid -> application_name."""
    conn = pg_connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT pid, application_name FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                [dbname],
            )
            return dict(cursor.fetchall())
    finally:
        conn.close()


def postgres_processes() -> set[int]:
    """Every PostgreSQL server process on this machine (backends, WAL writer, checkpointer, ...)."""
    import psutil

    return {p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "postgres"}
