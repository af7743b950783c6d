"""The benchmark harness: aiproxy against the limit (the fake upstream) and LiteLLM's proxy, in interleaved rounds.

    python bench/run.py [--rounds 3] [--duration 8] [--quick] [--out docs/benchmarks.md]
                        [--targets limit,aiproxy,aiproxy-limits,aiproxy-audit-off,aiproxy-2w,litellm]
                        [--litellm PATH] [--redis-url redis://127.0.0.1:6379/0]
                        [--workloads "chat c1,chat c10,chat c50,embeddings c10,stream c1,responses c10"]

One machine, one command. It starts a fake OpenAI-compatible upstream, aiproxy under gunicorn with
uvicorn workers on a scratch PostgreSQL database (created and migrated here), and LiteLLM's proxy when
`.venv-litellm/bin/litellm` exists, and aiproxy with per-key limits counted in Redis (aiproxy-limits);
then, round after round, runs every workload against every target so that machine noise hits them alike,
and compares each target with the limit pair by pair within a round (aiproxy-limits with aiproxy too:
the cost of limits). Non-streaming load comes from wrk (bench/post.lua); streaming latencies from a
small raw-socket client here. It checks that no request failed (a 429 from a limit included) and that
the audit table holds one row per request aiproxy received (exactly the requests sent, when each is
awaited), writes a markdown report (docs/benchmarks.md) and prints it. Exit status 1 when a request
failed, the audit count is off or the limits did not run through Redis; missed speed targets are
results, not failures. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEFAULT_LITELLM = ".venv-litellm/bin/litellm"  # where `make run` installs it
WRK_SCRIPT = ROOT / "bench" / "post.lua"
DEFAULT_LOG_DIR = "var/bench"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/aiproxy_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
SECRET_KEY = "bench-secret"  # noqa: S105  (a scratch database's pepper, nothing real)
KEY_NAME_PREFIX = "bench-harness "

CHAT_BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello in one short sentence."}]}
STREAM_BODY = {**CHAT_BODY, "stream": True}
EMBEDDINGS_BODY = {"model": "text-embedding-3-small", "input": "The quick brown fox jumps over the lazy dog."}
RESPONSES_BODY = {"model": "gpt-4o-mini", "input": "Say hello in one short sentence."}

# "The real configuration": a system context injected, defaults set, annotations on, full bodies audited.
POLICY = {
    "name": "bench-harness",
    "system_context": "You are a concise assistant. Answer in one short sentence.",
    "system_context_mode": "prepend",
    "param_defaults": {"temperature": 0.2, "max_tokens": 256},
    "annotate_responses": True,
    "audit_capture": "full",
}

# aiproxy-limits: every limit set, so every request runs the whole reservation (one Lua script in Redis
# before forwarding) and its settlement (batched after), yet far above anything the bench can reach: a
# refusal (429) would be a failed request. The plain targets' policy has no limit at all.
BENCH_LIMITS = {
    "rpm_limit": 1_000_000_000,
    "tpm_limit": 1_000_000_000,
    "max_parallel_requests": 10_000,
    "daily_budget_usd": "1000000",
    "monthly_budget_usd": "1000000",
}
LIMITED_TARGETS = {"aiproxy-limits": BENCH_LIMITS}

# The speed targets of issue 6 (per worker, policy and full audit on).
TARGET_RATIO_VS_LITELLM = 12.0
TARGET_RPS_FALLBACK = 1500.0  # 12 x the ~125 req/s measured for LiteLLM 1.108.7 when it is not installed here
TARGET_ADDED_P50_MS = 1.0
TARGET_STREAM_FIRST_EVENT_MS = 1.0
TARGET_RSS_PER_WORKER_MB = 80.0

EXACT_CHECK_REQUESTS = 300  # per aiproxy target, after the rounds: every one awaited, so every one audited


# --------------------------------------------------------------------------- #
# What is measured
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Workload:
    name: str
    path: str
    body: dict
    connections: int = 1
    stream: bool = False  # measured by the raw-socket client, not wrk


WORKLOADS = [
    Workload("chat c1", "/v1/chat/completions", CHAT_BODY, 1),
    Workload("chat c10", "/v1/chat/completions", CHAT_BODY, 10),
    Workload("chat c50", "/v1/chat/completions", CHAT_BODY, 50),
    Workload("embeddings c10", "/v1/embeddings", EMBEDDINGS_BODY, 10),
    Workload("stream c1", "/v1/chat/completions", STREAM_BODY, 1, stream=True),
    Workload("responses c10", "/v1/responses", RESPONSES_BODY, 10),
]


@dataclass
class Target:
    name: str
    label: str
    port: int
    process: subprocess.Popen | None = None
    key: str = "none"
    key_id: int | None = None
    audited: bool = False  # every request aiproxy receives must leave exactly one audit row
    is_proxy: bool = True  # has worker processes whose memory we report
    state_dir: str | None = None  # aiproxy's audit spool and metrics files, its own, removed at the end
    log_path: Path = Path(DEFAULT_LOG_DIR)  # the server's stdout and stderr
    env: dict[str, str] = field(default_factory=dict)  # aiproxy's settings of this target alone
    # Over the whole run, warm-up included: the final reconciliation of the audit log.
    sent_total: int = 0
    completed_total: int = 0


@dataclass
class Run:
    """One workload against one target in one round."""

    round: int
    target: str
    workload: str
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    sent: int = 0
    completed: int = 0
    # Audit rows for the target's key: at least `completed`, at most `sent` (see `check_audit`); 0 with audit off.
    audit_bounds: tuple[int, int] | None = None
    audit_rows: int | None = None
    peak_rss_kb: int | None = None  # sum over the workers of VmHWM during this run
    worker_rss_kb: list[int] = field(default_factory=list)  # each worker's VmRSS right after it
    stream: dict[str, list[float]] | None = None  # headers_ms / first_event_ms / done_ms samples
    error_notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- #
# Small utilities
# --------------------------------------------------------------------------- #


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], p: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- #
# The scratch database, the policy and the keys
# --------------------------------------------------------------------------- #


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def ensure_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(with_database(url, "postgres"), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


# The caller's settings for these would change what is measured: the harness sets its own.
FOREIGN_SETTINGS = (
    "DJANGO_",
    "AUDIT_",
    "LITELLM_",
    "GUNICORN_",
    "WEB_CONCURRENCY",
    "PROMETHEUS_",
    "ENABLE_",
    "REDIS_",
    "RATE_LIMIT_",
    "LIMITS_",
)


def django_env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_SETTINGS)}
    env.update(
        DATABASE_URL=database_url,
        SECRET_KEY=SECRET_KEY,
        API_KEY_PEPPER=SECRET_KEY,
        DJANGO_SETTINGS_MODULE="aiproxy.settings",
        DEBUG="false",
    )
    return env


# Runs inside `manage.py shell`: upserts the policy (no limits) and, for a target with limits, the same
# policy with them under a name of its own; replaces the harness's keys (and their old audit rows, so the
# table does not grow run after run), prints the new keys as one JSON line.
SETUP_SCRIPT = """
import json, os
from django.db import connection
from policies.keys import api_key_create
from policies.limits import LIMIT_FIELDS
from policies.models import ApiKey, Policy
spec = json.loads(os.environ["BENCH_POLICY"])
limited = json.loads(os.environ["BENCH_LIMITS"])
prefix = os.environ["BENCH_KEY_PREFIX"]

def upsert(values):
    policy = Policy.objects.filter(name=values["name"]).first() or Policy(name=values["name"])
    for name, value in values.items():
        setattr(policy, name, value)
    policy.full_clean()
    policy.save()
    return policy

policy = upsert({**{name: None for name in LIMIT_FIELDS}, **spec})
with connection.cursor() as cursor:
    cursor.execute("DELETE FROM proxy_auditrecord WHERE key_name LIKE %s", [prefix + "%"])
ApiKey.objects.filter(name__startswith=prefix).delete()
keys = {}
for target in json.loads(os.environ["BENCH_TARGETS"]):
    own = policy
    if target in limited:
        own = upsert({**spec, **limited[target], "name": spec["name"] + " " + target})
    api_key, raw = api_key_create(name=prefix + target, policy=own)
    keys[target] = [raw, api_key.pk]
print("BENCH_KEYS " + json.dumps(keys))
"""


def prepare_database(database_url: str, targets: list[Target]) -> None:
    """Create and migrate the scratch database, then give every aiproxy target its own key."""
    ensure_database(database_url)
    env = django_env(database_url)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=300)
    names = [t.name for t in targets if t.name.startswith("aiproxy")]
    env.update(
        BENCH_POLICY=json.dumps(POLICY),
        BENCH_LIMITS=json.dumps({name: limits for name, limits in LIMITED_TARGETS.items() if name in names}),
        BENCH_KEY_PREFIX=KEY_NAME_PREFIX,
        BENCH_TARGETS=json.dumps(names),
    )
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", SETUP_SCRIPT],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=120,
        capture_output=True,
        text=True,
    ).stdout
    keys = json.loads(out.split("BENCH_KEYS ", 1)[1])
    for target in targets:
        if target.name in keys:
            target.key, target.key_id = keys[target.name]


class AuditCounter:
    """Counts audit rows per key: each target has its own key, so other users of the database don't matter."""

    def __init__(self, database_url: str) -> None:
        self.conn = psycopg.connect(database_url, autocommit=True)

    def count(self, key_id: int) -> int:
        query = "SELECT count(*) FROM proxy_auditrecord WHERE api_key_id = %s"
        return self.conn.execute(query, (key_id,)).fetchone()[0]

    def refusals(self, key_id: int) -> tuple[int, int]:
        """Rows answered 429 (a limit refused) and 503 (limits or something else unavailable), warm-up included."""
        query = (
            "SELECT count(*) FILTER (WHERE status_code = 429), count(*) FILTER (WHERE status_code = 503) "
            "FROM proxy_auditrecord WHERE api_key_id = %s"
        )
        return self.conn.execute(query, (key_id,)).fetchone()

    def cost_nanos(self, key_id: int) -> int:
        """What the key's requests cost, by their audit rows, in nano-dollars (the limiter's unit)."""
        query = "SELECT coalesce(sum(cost_usd), 0) * 1000000000 FROM proxy_auditrecord WHERE api_key_id = %s"
        return int(self.conn.execute(query, (key_id,)).fetchone()[0])

    def wait_for(self, key_id: int, before: int, at_least: int, timeout: float) -> int:
        """Rows added since `before`, once there are `at_least` (the writer batches) and the count stopped moving."""
        deadline = time.monotonic() + timeout
        added = self.count(key_id) - before
        while added < at_least and time.monotonic() < deadline:
            time.sleep(0.05)
            added = self.count(key_id) - before
        # Requests still in flight when the client stopped may finish, and be written, a moment later.
        while time.monotonic() < deadline:
            time.sleep(0.25)
            previous, added = added, self.count(key_id) - before
            if added == previous:
                break
        return added

    def close(self) -> None:
        self.conn.close()


# --------------------------------------------------------------------------- #
# Redis: where aiproxy-limits keeps its counters
# --------------------------------------------------------------------------- #


def redis_client(url: str):
    import redis  # aiproxy's own dependency (proxy/limiter.py): only needed with aiproxy-limits

    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)


def redis_problem(url: str) -> str | None:
    """Why Redis cannot serve aiproxy-limits, or None."""
    try:
        client = redis_client(url)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001 - any reason at all: the target is skipped with it
        return f"{type(exc).__name__}: {exc}"[:200]
    return None


@dataclass
class LimiterState:
    """What the limiter left in Redis for one key, read once the servers have stopped (settlements flushed)."""

    prefix: str
    keys: list[str]
    window_requests: int  # admitted in Redis's last 60 s (the rpm window)
    spent_nanos: int  # over every UTC month of the run: estimates settled to the real cost
    unsettled: int  # members still in the in-flight set once every request has ended (never settled)
    audit_nanos: int  # the same key's audit rows' cost, for comparison
    refused: int  # audit rows answered 429, warm-up included
    unavailable: int  # and 503

    @property
    def ok(self) -> bool:
        """Limits ran through Redis (counters written, spend settled) and never refused."""
        return (
            bool(self.keys)
            and self.window_requests > 0
            and self.spent_nanos > 0
            and not self.refused + self.unavailable
        )


def limiter_state(url: str, prefix: str, key_id: int, audit: AuditCounter) -> LimiterState:
    """The key's counters under this run's prefix (unique per run: nothing else writes there)."""
    client = redis_client(url)
    try:
        keys = sorted(k.decode() for k in client.scan_iter(match=prefix + "*", count=1000))
        base = f"{prefix}{{{key_id}}}"
        window = sum(int(v) for v in client.hvals(base + ":rq"))
        spent = sum(int(client.get(k) or 0) for k in keys if k.startswith(base + ":sm:"))
        unsettled = client.zcard(base + ":fl")
    finally:
        client.close()
    refused, unavailable = audit.refusals(key_id)
    return LimiterState(prefix, keys, window, spent, unsettled, audit.cost_nanos(key_id), refused, unavailable)


# --------------------------------------------------------------------------- #
# Servers
# --------------------------------------------------------------------------- #


def spawn(target: Target, command: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.Popen:
    target.log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(target.log_path, "wb")  # noqa: SIM115  (the child owns it)
    # Own session: stopping the target stops its whole process group, children included.
    return subprocess.Popen(
        command, cwd=cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def http_get_status(port: int, path: str) -> int | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            head = sock.recv(64)
        return int(head.split()[1])
    except (OSError, IndexError, ValueError):
        return None


def wait_ready(target: Target, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if target.process.poll() is not None:
            raise RuntimeError(f"{target.name} exited ({target.process.returncode}): see {target.log_path}")
        if http_get_status(target.port, path) == 200:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{target.name} not ready after {timeout:.0f}s: see {target.log_path}")


def start_limit(target: Target) -> None:
    command = [sys.executable, "tests/fake_upstream.py", "--port", str(target.port), "--no-record"]
    target.process = spawn(target, command, dict(os.environ))


def start_aiproxy(target: Target, *, upstream_port: int, database_url: str, workers: int, audit: bool, log_level: str):
    target.state_dir = tempfile.mkdtemp(prefix=f"bench-{target.name}-")
    env = django_env(database_url)
    env.update(
        LITELLM_BASE_URL=f"http://127.0.0.1:{upstream_port}",
        LOG_LEVEL=log_level,
        AUDIT_ENABLED="true" if audit else "false",
        AUDIT_SPOOL_DIR=f"{target.state_dir}/spool",
        # gunicorn.conf.py (which gunicorn reads from the cwd: the production settings) clears this
        # directory at start: each target needs its own, and must not touch a local server's.
        PROMETHEUS_MULTIPROC_DIR=f"{target.state_dir}/metrics",
    )
    env.update(target.env)
    # Made here, not only by gunicorn.conf.py's on_starting: the app is preloaded before that hook runs,
    # and a metric created at import (proxy/limiter.py's) opens its file in this directory right away.
    Path(env["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
    command = [
        str(BIN / "gunicorn"),
        "aiproxy.asgi:application",
        "-k",
        "uvicorn_worker.UvicornWorker",
        "-w",
        str(workers),
        "-b",
        f"127.0.0.1:{target.port}",
        "--log-level",
        "warning",
        "--graceful-timeout",
        "10",
    ]
    target.process = spawn(target, command, env)


def litellm_config(upstream_port: int, master_key: str) -> str:
    """LiteLLM's config, as JSON (YAML's superset, so no YAML library needed): both models to the fake.

    Recent LiteLLM refuses to start without a master key; with one and no database, a request's key is
    checked against it alone, LiteLLM's lightest authenticated setup (as in litellm_config.yaml).
    """
    api_base = f"http://127.0.0.1:{upstream_port}/v1"
    models = [
        {"model_name": name, "litellm_params": {"model": f"openai/{name}", "api_base": api_base, "api_key": "fake"}}
        for name in ("gpt-4o-mini", "text-embedding-3-small")
    ]
    config = {
        "model_list": models,
        "litellm_settings": {"telemetry": False},
        "general_settings": {"master_key": master_key},
    }
    return json.dumps(config, indent=2)


def start_litellm(target: Target, *, binary: Path, upstream_port: int, work_dir: Path) -> None:
    config = work_dir / "litellm_bench_config.yaml"
    target.key = "sk-bench-" + secrets.token_hex(16)
    config.write_text(litellm_config(upstream_port, target.key))
    # No DATABASE_URL (LiteLLM would take our database for its own), no network fetch of the cost map,
    # and its own directory as cwd so it does not load the repo's .env.
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_LOG="ERROR",
        LITELLM_TELEMETRY="False",
        LITELLM_DONT_SHOW_FEEDBACK_BOX="True",
    )
    command = [str(binary), "--config", str(config), "--host", "127.0.0.1", "--port", str(target.port)]
    command += ["--num_workers", "1"]
    target.process = spawn(target, command, env, cwd=work_dir)


# --------------------------------------------------------------------------- #
# Process memory (/proc)
# --------------------------------------------------------------------------- #


def child_pids(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            # The command name (field 2) may hold spaces: the fields after its closing parenthesis are fixed.
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                children.append(int(stat.parent.name))
    return sorted(children)


def worker_pids(target: Target) -> list[int]:
    """gunicorn's workers are the master's children; a single-process server is its own worker."""
    if target.process is None or not target.is_proxy:
        return []
    return child_pids(target.process.pid) or [target.process.pid]


def memory_kb(pid: int) -> tuple[int, int]:
    """(VmHWM, VmRSS) in kB."""
    values = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmHWM:", "VmRSS:")):
                name, amount = line.split(":")
                values[name] = int(amount.split()[0])
    return values.get("VmHWM", 0), values.get("VmRSS", 0)


def reset_peak_memory(pids: list[int]) -> None:
    """Writing 5 to clear_refs resets VmHWM (Linux >= 4.0), so each run reports its own peak."""
    for pid in pids:
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")


def record_memory(run: Run, pids: list[int]) -> None:
    readings = [memory_kb(pid) for pid in pids]
    run.peak_rss_kb = sum(hwm for hwm, _ in readings) if readings else None
    run.worker_rss_kb = [rss for _, rss in readings]


# --------------------------------------------------------------------------- #
# Load: wrk for throughput and latency
# --------------------------------------------------------------------------- #


def run_wrk(target: Target, workload: Workload, duration: int, run: Run) -> None:
    url = f"http://127.0.0.1:{target.port}{workload.path}"
    command = ["wrk", "-t1", f"-c{workload.connections}", f"-d{duration}s", "--timeout", "10s", "--latency"]
    command += ["-s", str(WRK_SCRIPT), url, "--", json.dumps(workload.body)]
    env = {**os.environ, "AIPROXY_KEY": target.key}
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=duration + 30, check=False)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        run.errors += 1
        run.error_notes.append(f"wrk failed: {out.stderr.strip()[:200]}")
        return
    stats = json.loads(line.split(" ", 1)[1])
    run.rps = stats["requests"] / (stats["duration_us"] / 1e6)
    run.sent, run.completed = stats["sent"], stats["requests"]
    if run.completed:  # wrk reports 0 for the percentiles of no request at all
        run.p50_ms, run.p99_ms = stats["p50_us"] / 1000, stats["p99_us"] / 1000
    else:
        run.error_notes.append("no request completed within the run")
    socket_errors = stats["connect_errors"] + stats["read_errors"] + stats["write_errors"] + stats["timeouts"]
    run.errors += stats["non_2xx"] + socket_errors
    if stats["non_2xx"] or socket_errors:
        run.error_notes.append(f"non-2xx {stats['non_2xx']}, socket errors {socket_errors}")


# --------------------------------------------------------------------------- #
# Streaming latencies: a raw-socket client (wrk cannot see events)
# --------------------------------------------------------------------------- #


class HttpConnection:
    """A minimal blocking HTTP/1.1 client over one keep-alive socket.

    Blocking and sequential on purpose: at concurrency 1 nothing else needs the thread, and the
    timestamps are taken the moment recv() returns, with no event loop scheduling in between.
    """

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed by the server")
        self.buffer += data

    def _read_until(self, marker: bytes) -> bytes:
        while (end := self.buffer.find(marker)) < 0:
            self._fill()
        found, self.buffer = self.buffer[:end], self.buffer[end + len(marker) :]
        return found

    def _read_exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        found, self.buffer = self.buffer[:size], self.buffer[size:]
        return found

    def head(self) -> tuple[int, dict[str, str]]:
        status_line, *lines = self._read_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(status_line.split()[1]), headers

    def body(self, headers: dict[str, str]):
        """Yield the body's bytes as they arrive (de-chunked)."""
        if "chunked" in headers.get("transfer-encoding", ""):
            while True:
                size = int(self._read_until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    self._read_until(b"\r\n")  # no trailers expected: just the final CRLF
                    return
                yield self._read_exact(size)
                self._read_exact(2)
        elif "content-length" in headers:
            yield self._read_exact(int(headers["content-length"]))
        else:
            raise ConnectionError("a response without length: not expected from these servers")


def stream_once(conn: HttpConnection, request: bytes) -> tuple[int, dict[str, float]]:
    """One streamed chat: (status, times in ms since the request was sent)."""
    started = time.perf_counter()
    conn.sock.sendall(request)
    status, headers = conn.head()
    times = {"headers_ms": (time.perf_counter() - started) * 1000}
    pending = b""
    for piece in conn.body(headers):
        pending += piece.replace(b"\r\n", b"\n")
        while b"\n\n" in pending:  # a complete event
            event, pending = pending.split(b"\n\n", 1)
            if not event.startswith(b"data:"):
                continue
            now_ms = (time.perf_counter() - started) * 1000
            times.setdefault("first_event_ms", now_ms)
            if event[5:].strip() == b"[DONE]":
                times["done_ms"] = now_ms
    if headers.get("connection", "").lower() == "close":
        raise ConnectionResetError("server closed the connection")
    return status, times


def http_request(target: Target, workload: Workload) -> bytes:
    body = json.dumps(workload.body).encode()
    return (
        f"POST {workload.path} HTTP/1.1\r\nHost: 127.0.0.1:{target.port}\r\n"
        f"Authorization: Bearer {target.key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def exchange(conn: HttpConnection, request: bytes) -> int:
    """Send one request, read the whole answer; its status."""
    conn.sock.sendall(request)
    status, headers = conn.head()
    for _ in conn.body(headers):
        pass
    return status


def run_stream(target: Target, workload: Workload, samples: int, budget: float, run: Run) -> None:
    """Sequential streamed requests until `samples` or `budget` seconds, whichever comes first."""
    request = http_request(target, workload)
    run.stream = {"headers_ms": [], "first_event_ms": [], "done_ms": []}
    conn = HttpConnection(target.port)
    deadline = time.monotonic() + budget
    try:
        while run.sent < samples and time.monotonic() < deadline:
            run.sent += 1
            try:
                status, times = stream_once(conn, request)
            except OSError as exc:  # includes ConnectionError and socket timeouts
                run.errors += 1
                run.error_notes.append(f"stream: {exc!r}"[:200])
                conn.close()
                conn = HttpConnection(target.port)
                continue
            if status != 200 or "done_ms" not in times:
                run.errors += 1
                run.error_notes.append(f"stream: status {status}, [DONE] {'done_ms' in times}")
                continue
            run.completed += 1
            for name, value in times.items():
                run.stream[name].append(value)
    finally:
        conn.close()
    run.p50_ms = percentile(run.stream["done_ms"], 50)
    run.p99_ms = percentile(run.stream["done_ms"], 99)


# --------------------------------------------------------------------------- #
# Rounds
# --------------------------------------------------------------------------- #


@dataclass
class Settings:
    rounds: int
    duration: int
    stream_samples: int
    stream_budget: float
    warmup: int


def measure(target: Target, workload: Workload, settings: Settings, audit: AuditCounter, round_no: int) -> Run:
    """One run, with its memory and audit bookkeeping around it."""
    run = Run(round=round_no, target=target.name, workload=workload.name)
    if target.process is not None and target.process.poll() is not None:
        raise RuntimeError(f"{target.name} died (exit {target.process.returncode}): see {target.log_path}")
    pids = worker_pids(target)
    reset_peak_memory(pids)
    before = audit.count(target.key_id) if target.key_id is not None else None
    if workload.stream:
        run_stream(target, workload, settings.stream_samples, settings.stream_budget, run)
    else:
        run_wrk(target, workload, settings.duration, run)
    if before is not None:
        check_audit(target, run, audit, before)
    record_memory(run, pids)
    return run


def check_audit(target: Target, run: Run, audit: AuditCounter, before: int) -> None:
    """Every answered request must be audited, and nothing twice: completed <= rows <= sent.

    Not exactly `sent`: wrk stops hard, closing connections with requests in flight. uvicorn drops a
    request whose client left before the app read its body (receive() answers http.disconnect), so
    aiproxy never sees it (the gap this column shows). A request whose client leaves while aiproxy
    awaits the upstream's answer is cancelled and recorded as client_disconnected: it has its row.
    The exact count is checked separately, every request awaited (`exact_audit_check`).
    """
    target.sent_total += run.sent
    target.completed_total += run.completed
    run.audit_bounds = (run.completed, run.sent) if target.audited else (0, 0)
    wait = 10.0 if target.audited else 0.3
    run.audit_rows = audit.wait_for(target.key_id, before, run.audit_bounds[0], timeout=wait)


def reconcile_audit(targets: list[Target], audit: AuditCounter) -> dict[str, tuple[int, int, int, bool]]:
    """Per key, (sent, answered, rows, audited) over the whole run: a row late for its own run still counts."""
    totals = {}
    for target in targets:
        if target.key_id is None:
            continue
        at_least = target.completed_total if target.audited else 0
        rows = audit.wait_for(target.key_id, 0, at_least, timeout=30.0 if target.audited else 0.0)
        totals[target.name] = (target.sent_total, target.completed_total, rows, target.audited)
    return totals


def exact_audit_check(target: Target, audit: AuditCounter, requests: int, concurrency: int = 10) -> tuple[int, int]:
    """(answered, audit rows) for `requests` chat requests, `concurrency` at a time, every one awaited."""
    request = http_request(target, WORKLOADS[0])
    before = audit.count(target.key_id)

    def client(count: int) -> int:
        conn, answered = HttpConnection(target.port), 0
        try:
            for _ in range(count):
                answered += exchange(conn, request) == 200
        except OSError:
            pass  # the rest of this share counts as unanswered: the check fails with the numbers to show
        finally:
            conn.close()
        return answered

    shares = [requests // concurrency + (i < requests % concurrency) for i in range(concurrency)]
    with ThreadPoolExecutor(concurrency) as pool:
        answered = sum(pool.map(client, shares))
    target.sent_total += requests
    target.completed_total += answered
    return answered, audit.wait_for(target.key_id, before, requests, timeout=10.0)


def warm_up(targets: list[Target], settings: Settings, audit: AuditCounter, *, quick: bool) -> None:
    """Fill caches and connection pools (keys, policy, upstream pool, LiteLLM's router) before measuring.

    Even --quick streams a few requests: a cold LiteLLM can take over a second to answer its first.
    """
    brief = Settings(1, settings.warmup, 20, 2.0, settings.warmup)
    workloads = [WORKLOADS[4]] if quick else [WORKLOADS[1], WORKLOADS[3], WORKLOADS[4]]
    for target in targets:
        for workload in workloads:
            measure(target, workload, brief, audit, round_no=0)


def run_rounds(targets: list[Target], workloads: list[Workload], settings: Settings, audit: AuditCounter) -> list[Run]:
    runs = []
    for round_no in range(1, settings.rounds + 1):
        # Rotate the order so that no target always runs first after a switch of workload.
        shift = (round_no - 1) % len(targets)
        order = targets[shift:] + targets[:shift]
        for workload in workloads:
            for target in order:
                run = measure(target, workload, settings, audit, round_no)
                runs.append(run)
                rate = f"{run.rps:8.0f} req/s" if run.rps is not None else f"{run.completed:5d} streams"
                log(
                    f"round {round_no} {workload.name:15s} {target.name:18s} {rate}  "
                    f"p50 {fmt(run.p50_ms, 2)} ms  p99 {fmt(run.p99_ms, 2)} ms  errors {run.errors}"
                )
    return runs


# --------------------------------------------------------------------------- #
# Summaries: per round pairs, then medians
# --------------------------------------------------------------------------- #


def fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def find(runs: list[Run], round_no: int, target: str, workload: str) -> Run | None:
    return next((r for r in runs if (r.round, r.target, r.workload) == (round_no, target, workload)), None)


def paired(runs: list[Run], target: str, other: str, workload: str, value) -> list[float]:
    """value(run, other_run) for every round where both ran: ratios and differences stay within a round."""
    pairs = []
    for run in (r for r in runs if r.target == target and r.workload == workload):
        partner = find(runs, run.round, other, workload)
        if partner is not None:
            result = value(run, partner)
            if result is not None:
                pairs.append(result)
    return pairs


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def difference(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


@dataclass
class Summary:
    target: str
    workload: str
    rps: float | None
    p50_ms: float | None
    p99_ms: float | None
    added_p50_ms: float | None
    vs_limit: float | None
    vs_litellm: float | None
    errors: int
    peak_rss_mb: float | None
    worker_rss_mb: list[float]
    stream: dict[str, float | None] | None = None


def summarise(runs: list[Run], target: str, workload: Workload) -> Summary:
    mine = [r for r in runs if r.target == target and r.workload == workload.name]
    added = paired(runs, target, "limit", workload.name, lambda a, b: difference(a.p50_ms, b.p50_ms))
    summary = Summary(
        target=target,
        workload=workload.name,
        rps=median([r.rps for r in mine]),
        p50_ms=median([r.p50_ms for r in mine]),
        p99_ms=median([r.p99_ms for r in mine]),
        added_p50_ms=median(added) if target != "limit" else None,
        vs_limit=median(paired(runs, target, "limit", workload.name, lambda a, b: ratio(a.rps, b.rps))),
        vs_litellm=median(paired(runs, target, "litellm", workload.name, lambda a, b: ratio(a.rps, b.rps))),
        errors=sum(r.errors for r in mine),
        peak_rss_mb=max((r.peak_rss_kb / 1024 for r in mine if r.peak_rss_kb), default=None),
        worker_rss_mb=[kb / 1024 for kb in mine[-1].worker_rss_kb] if mine else [],
    )
    if workload.stream:
        summary.stream = stream_summary(runs, mine, target, workload)
    return summary


def stream_summary(runs: list[Run], mine: list[Run], target: str, workload: Workload) -> dict[str, float | None]:
    """Percentiles over all rounds' samples; the first-event gap to the limit paired per round."""
    pooled = {name: [v for r in mine for v in r.stream[name]] for name in ("headers_ms", "first_event_ms", "done_ms")}
    result = {f"{name}_p{p}": percentile(values, p) for name, values in pooled.items() for p in (50, 99)}
    result["samples"] = len(pooled["done_ms"])

    def first_event_gap(a: Run, b: Run) -> float | None:
        return difference(percentile(a.stream["first_event_ms"], 50), percentile(b.stream["first_event_ms"], 50))

    gaps = paired(runs, target, "limit", workload.name, first_event_gap)
    result["first_event_added_ms"] = median(gaps) if target != "limit" else None
    return result


# --------------------------------------------------------------------------- #
# The report
# --------------------------------------------------------------------------- #


def machine() -> dict[str, str]:
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        platform.processor() or "unknown",
    )
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kb = next(int(ln.split()[1]) for ln in meminfo if ln.startswith("MemTotal"))
    return {
        "cpu": cpu,
        "cores": str(len(os.sched_getaffinity(0))),
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


VERSIONED_PACKAGES = (
    "django",
    "uvicorn",
    "gunicorn",
    "uvicorn-worker",
    "uvloop",
    "httptools",
    "aiohttp",
    "orjson",
    "psycopg",
)


def versions(litellm: Path | None) -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    if litellm is not None:
        python = litellm.parent / "python"
        code = "import importlib.metadata as m; print(m.version('litellm'))"
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=30, check=False)
        found["litellm"] = out.stdout.strip() or "unknown"
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    found["wrk"] = (wrk.stdout + wrk.stderr).split()[1] if (wrk.stdout + wrk.stderr).split() else "unknown"
    return found


def load_table(summaries: list[Summary]) -> list[str]:
    lines = [
        "| workload | target | req/s | p50 ms | p99 ms | added p50 ms | × limit | × LiteLLM | errors "
        "| peak RSS MB (workers) | RSS MB per worker after |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for s in summaries:
        if s.stream is not None:
            continue
        lines.append(
            f"| {s.workload} | {s.target} | {fmt(s.rps, 0)} | {fmt(s.p50_ms, 2)} | {fmt(s.p99_ms, 2)} "
            f"| {fmt(s.added_p50_ms, 2)} | {fmt(s.vs_limit, 3)} | {fmt(s.vs_litellm, 1)} | {s.errors} "
            f"| {fmt(s.peak_rss_mb, 0)} | {', '.join(fmt(m, 0) for m in s.worker_rss_mb) or '—'} |"
        )
    return lines


def stream_table(summaries: list[Summary]) -> list[str]:
    lines = [
        "| target | samples | headers p50 / p99 ms | first event p50 / p99 ms | [DONE] p50 / p99 ms "
        "| first event added p50 ms | errors |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for s in summaries:
        if s.stream is None:
            continue
        st = s.stream

        def pair(name: str, st=st) -> str:
            return f"{fmt(st[name + '_p50'], 2)} / {fmt(st[name + '_p99'], 2)}"

        lines.append(
            f"| {s.target} | {st['samples']} | {pair('headers_ms')} | {pair('first_event_ms')} | {pair('done_ms')} "
            f"| {fmt(st['first_event_added_ms'], 2)} | {s.errors} |"
        )
    return lines


def stream_rate(run: Run) -> float | None:
    """A sequential stream client's requests per second: 1 / the mean time to [DONE]."""
    done = run.stream["done_ms"] if run.stream else []
    return 1000 / statistics.fmean(done) if done else None


def limits_table(runs: list[Run], workloads: list[Workload]) -> list[str]:
    """aiproxy-limits against aiproxy, workload by workload: req/s and p50 paired within each round."""
    if not {"aiproxy", "aiproxy-limits"} <= {r.target for r in runs}:
        return []
    lines = [
        "| workload | aiproxy req/s | aiproxy-limits req/s | **limits ÷ no limits** | added p50 ms |",
        "|---|--:|--:|--:|--:|",
    ]
    for workload in workloads:

        def rate(run: Run, stream=workload.stream) -> float | None:
            return stream_rate(run) if stream else run.rps

        def rates(target: str, name=workload.name) -> list[float | None]:
            return [rate(r) for r in runs if (r.target, r.workload) == (target, name)]

        ratios = paired(runs, "aiproxy-limits", "aiproxy", workload.name, lambda a, b: ratio(rate(a), rate(b)))
        added = paired(runs, "aiproxy-limits", "aiproxy", workload.name, lambda a, b: difference(a.p50_ms, b.p50_ms))
        lines.append(
            f"| {workload.name} | {fmt(median(rates('aiproxy')), 0)} | {fmt(median(rates('aiproxy-limits')), 0)} "
            f"| **{fmt(median(ratios), 3)}** | {fmt(median(added), 2)} |"
        )
    return lines


def limits_checks(limits: dict[str, LimiterState]) -> tuple[list[str], bool]:
    lines, ok = [], True
    for name, state in limits.items():
        ok &= state.ok
        verdict = "ok" if state.ok else "**failed**"
        lines += [
            f"- {name}: answers 429 (a limit refused) **{state.refused}**, 503 **{state.unavailable}**, "
            "warm-up included, from the audit rows; in Redis under `" + state.prefix + f"`: {len(state.keys)} keys, "
            f"{state.window_requests:,} requests in the last minute's window, spend ${state.spent_nanos / 1e9:.6f} "
            f"(the audit rows' cost: ${state.audit_nanos / 1e9:.6f}), {state.unsettled} reservations never "
            f"settled (left in the in-flight set after every request ended): {verdict}",
        ]
    return lines, ok


def audit_table(runs: list[Run], totals: dict, exact: dict) -> tuple[list[str], bool]:
    """Per workload and over the whole run: answered <= rows <= sent; in the exact check: rows == sent."""
    lines = [
        "| target | requests | sent | answered | audit rows | sent, no row (client left in flight) | check |",
        "|---|---|--:|--:|--:|--:|:-:|",
    ]

    def verdict(good: bool) -> str:
        return "ok" if good else "**failed**"

    for target, workload in sorted({(r.target, r.workload) for r in runs if r.audit_bounds is not None}):
        mine = [r for r in runs if (r.target, r.workload) == (target, workload)]
        sent, answered, rows = (sum(getattr(r, f) for r in mine) for f in ("sent", "completed", "audit_rows"))
        within = all(r.audit_bounds[0] <= r.audit_rows <= r.audit_bounds[1] for r in mine)
        unread = f"{sent - rows:,}" if mine[0].audit_bounds[1] else "—"  # audit off: nothing to read
        lines.append(f"| {target} | {workload} | {sent:,} | {answered:,} | {rows:,} | {unread} | {verdict(within)} |")
    ok = True
    for target, (sent, answered, rows, expected) in exact.items():
        good = answered == sent and rows == expected
        ok &= good
        lines.append(
            f"| {target} | **exact check**: chat, 10 at a time, all awaited | {sent:,} | {answered:,} | {rows:,} "
            f"| — | {verdict(good)} |"
        )
    for target, (sent, answered, rows, audited) in totals.items():
        good = answered <= rows <= sent if audited else rows == 0
        ok &= good
        lines.append(
            f"| {target} | **all**, warm-up included | {sent:,} | {answered:,} | {rows:,} "
            f"| {f'{sent - rows:,}' if audited else '—'} | {verdict(good)} |"
        )
    return lines, ok


def goal_rows(
    by_key: dict[tuple[str, str], Summary], final_rss: dict[str, list[float]], master_rss: dict[str, float]
) -> list[str]:
    """The targets of issue 6, met or missed in this run (all for aiproxy: 1 worker, policy, full audit)."""
    chat = by_key.get(("aiproxy", "chat c10"))
    c1 = by_key.get(("aiproxy", "chat c1"))
    stream = by_key.get(("aiproxy", "stream c1"))
    litellm_stream = by_key.get(("litellm", "stream c1"))
    rows = []

    def row(goal: str, measured: str, met: bool | None) -> None:
        verdict = "—" if met is None else ("met" if met else "**missed**")
        rows.append(f"| {goal} | {measured} | {verdict} |")

    if chat and chat.vs_litellm is not None:
        row(
            f"≥ {TARGET_RATIO_VS_LITELLM:.0f}× LiteLLM's req/s at concurrency 10",
            f"{chat.vs_litellm:.1f}× ({fmt(chat.rps, 0)} req/s)",
            chat.vs_litellm >= TARGET_RATIO_VS_LITELLM,
        )
    elif chat:
        row(
            f"≥ {TARGET_RPS_FALLBACK:,.0f} req/s at concurrency 10 (LiteLLM not installed: 12 × 125)",
            f"{fmt(chat.rps, 0)} req/s",
            chat.rps is not None and chat.rps >= TARGET_RPS_FALLBACK,
        )
    if c1:
        row(
            f"added latency over the limit at concurrency 1 ≤ {TARGET_ADDED_P50_MS:g} ms p50",
            f"{fmt(c1.added_p50_ms, 2)} ms",
            c1.added_p50_ms is not None and c1.added_p50_ms <= TARGET_ADDED_P50_MS,
        )
    if stream and stream.stream:
        added = stream.stream["first_event_added_ms"]
        litellm_note = ""
        if litellm_stream and litellm_stream.stream:
            litellm_note = f"; LiteLLM {fmt(litellm_stream.stream['first_event_added_ms'], 2)} ms"
        row(
            f"streaming: first event ≤ {TARGET_STREAM_FIRST_EVENT_MS:g} ms later than from the upstream (p50)",
            f"{fmt(added, 2)} ms{litellm_note}",
            added is not None and added <= TARGET_STREAM_FIRST_EVENT_MS,
        )
    if final_rss.get("aiproxy"):
        worst = max(final_rss["aiproxy"])
        master = master_rss.get("aiproxy")
        master_note = f" (gunicorn master: {master:.0f} MB)" if master is not None else ""
        row(
            f"≤ {TARGET_RSS_PER_WORKER_MB:.0f} MB RSS per worker after the run",
            f"{worst:.0f} MB{master_note}",
            worst <= TARGET_RSS_PER_WORKER_MB,
        )
    if not rows:
        return []
    return ["| target (issue 6) | this run | |", "|---|---|---|", *rows]


def report(runs: list[Run], summaries: list[Summary], context: dict) -> tuple[str, bool]:
    by_key = {(s.target, s.workload): s for s in summaries}
    audit_lines, audit_ok = audit_table(runs, context["audit_totals"], context["audit_exact"])
    limits_lines, limits_ok = limits_checks(context.get("limits", {}))
    cost_of_limits = limits_table(runs, context["workloads"])
    if cost_of_limits:
        cost_of_limits = [
            "## The cost of limits",
            "",
            "aiproxy-limits is aiproxy with every limit of its key set, far above the load: each request runs the",
            "reservation (one Lua script in Redis) before it goes upstream and its settlement (batched) after.",
            "*limits ÷ no limits* is its req/s over aiproxy's in the same round, median over the rounds (1.000: free);",
            "*added p50* the difference of their p50s, paired the same way. For stream c1 (sequential), req/s is",
            "1 / the mean time to `[DONE]` and p50 the time to `[DONE]`.",
            "",
            *cost_of_limits,
            "",
        ]
    failed = sum(r.errors for r in runs if r.round > 0)
    lines = [
        "# Benchmarks",
        "",
        "Generated by `bench/run.py` (see `bench/README.md` for the method); every number below comes from the one",
        "run described here. The machine is shared and noisy: read the ratios and the differences, which are paired",
        "within a round, rather than the absolute figures.",
        "",
        f"- **Date:** {context['date']}",
        f"- **Command:** `{context['command']}`",
        f"- **Machine:** {context['machine']['cores']} cores ({context['machine']['cpu']}), "
        f"{context['machine']['memory']} memory, Linux {context['machine']['kernel']}, "
        f"load average at start {context['machine']['load']}",
        "- **Versions:** " + ", ".join(f"{k} {v}" for k, v in context["versions"].items()),
        f"- **Rounds:** {context['settings'].rounds} × {context['settings'].duration} s per wrk run "
        f"(`wrk -t1 -cN --latency -s bench/post.lua`), {context['settings'].stream_samples} streamed requests "
        f"per round and target (at most {context['settings'].stream_budget:g} s); target order rotated each round",
        "- **Targets:** " + "; ".join(context["target_notes"]),
        "",
        "## The targets of issue 6",
        "",
        *goal_rows(by_key, context["final_rss"], context.get("master_rss", {})),
        "",
        *cost_of_limits,
        "## Non-streaming chat and embeddings",
        "",
        "Medians over the rounds. *added p50* is the target's p50 minus the limit's in the same round; *× limit* and",
        "*× LiteLLM* are req/s ratios computed per round, then their median. Errors are non-2xx responses plus",
        "socket errors, summed over the rounds. Peak RSS is the sum over the proxy's worker processes of VmHWM",
        "during the run (reset before each run), the largest over the rounds; the per-worker RSS is VmRSS",
        "right after the last round's run.",
        "",
        *load_table(summaries),
        "",
        "## Streaming chat (sequential, concurrency 1)",
        "",
        "Times from sending the request to the response headers, to the first SSE event and to `data: [DONE]`,",
        "percentiles over all rounds' samples; *first event added* is the p50 gap to the limit, paired per round.",
        "",
        *stream_table(summaries),
        "",
        "## Checks",
        "",
        f"- Failed requests (all targets, all rounds): **{failed}**" + ("" if failed == 0 else " — see the log"),
        "- Audit rows: each aiproxy target has its own key; its rows are counted before and after every run",
        "  (waiting up to 10 s for the background writer). Every answered request must have exactly one row:",
        "  answered ≤ rows ≤ sent. wrk stops hard, closing connections with a request in flight: uvicorn drops",
        "  one whose body aiproxy had not read yet: aiproxy never sees it. Those are the *no row* column, at most",
        "  the connections in flight; a request aiproxy was already forwarding when its client left has its row",
        "  (outcome client_disconnected). The **exact check** awaits every request, so there rows must equal",
        "  requests. With audit off, no row may appear.",
        *(
            [
                "- Limits: a 429 anywhere (warm-up included) means a limit was set too low and fails the run, as does",
                "  a 503 (limits unavailable: Redis failed, RATE_LIMIT_REDIS_FAILURE=closed) or finding no counters",
                "  and no spend in Redis under the run's prefix afterwards (limits did not run through Redis).",
                "  Reservations never settled (still in the in-flight set once the servers stopped) and the spend",
                "  against the audit rows' cost are shown, not checked.",
                *limits_lines,
            ]
            if limits_lines
            else []
        ),
        "",
        *audit_lines,
        "",
    ]
    run_notes = [
        f"round {r.round}, {r.workload}, {r.target}: {'; '.join(r.error_notes)}" for r in runs if r.error_notes
    ]
    notes = context["notes"] + run_notes[:20]
    if notes:
        lines += ["## Notes", "", *[f"- {note}" for note in notes], ""]
    lines += per_round_details(runs)
    return "\n".join(lines) + "\n", failed == 0 and audit_ok and limits_ok


def per_round_details(runs: list[Run]) -> list[str]:
    lines = [
        "<details><summary>Every run</summary>",
        "",
        "For streams, p50 and p99 are the time to `[DONE]`.",
        "",
        "| round | workload | target | req/s | p50 ms | p99 ms | errors | sent | audit rows |",
        "|--:|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for r in sorted((r for r in runs if r.round > 0), key=lambda r: (r.workload, r.target, r.round)):
        audit = "—" if r.audit_rows is None else f"{r.audit_rows:,}"
        lines.append(
            f"| {r.round} | {r.workload} | {r.target} | {fmt(r.rps, 0)} | {fmt(r.p50_ms, 2)} | {fmt(r.p99_ms, 2)} "
            f"| {r.errors} | {r.sent:,} | {audit} |"
        )
    return [*lines, "", "</details>"]


# --------------------------------------------------------------------------- #
# Main
# --------------------------------------------------------------------------- #

ALL_TARGETS = ["limit", "aiproxy", "aiproxy-limits", "aiproxy-audit-off", "aiproxy-2w", "litellm"]
TARGET_LABELS = {
    "limit": "limit: the fake upstream, direct",
    "aiproxy": "aiproxy: 1 gunicorn/uvicorn worker, PostgreSQL, policy (system context, defaults, annotations), "
    "full audit",
    "aiproxy-limits": "aiproxy-limits: the same as aiproxy, its key's policy with every limit set (requests and "
    "tokens per minute, concurrency, daily and monthly budget) far above the load, enforced through Redis "
    "({redis}, REDIS_KEY_PREFIX={prefix}, RATE_LIMIT_REDIS_FAILURE=closed)",
    "aiproxy-audit-off": "aiproxy-audit-off: the same with AUDIT_ENABLED=false",
    "aiproxy-2w": "aiproxy-2w: the same as aiproxy with 2 workers",
    "litellm": "litellm: LiteLLM proxy, 1 worker, both models pointed at the fake upstream",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--stream-samples", type=int, default=200, help="streamed requests per round and target")
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s runs: proves the harness works")
    parser.add_argument("--out", default="docs/benchmarks.md", help="where the markdown report goes")
    parser.add_argument(
        "--targets", default=",".join(ALL_TARGETS), help="comma-separated, from " + ", ".join(ALL_TARGETS)
    )
    parser.add_argument(
        "--workloads", default=",".join(w.name for w in WORKLOADS), help="comma-separated subset of the workloads"
    )
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL))
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL),
        help="the Redis aiproxy-limits counts in (under a key prefix of its own per run)",
    )
    parser.add_argument("--log-level", default="INFO", help="aiproxy's LOG_LEVEL (INFO: one access line per request)")
    parser.add_argument("--log-dir", default=DEFAULT_LOG_DIR, help="where the servers' output goes")
    parser.add_argument(
        "--key-only", action="store_true", help="prepare the database, print a key with the harness's policy, exit"
    )
    parser.add_argument(
        "--key-target",
        default=os.environ.get("BENCH_KEY_TARGET", "aiproxy"),
        choices=["aiproxy", *LIMITED_TARGETS],
        help="with --key-only: whose key (aiproxy-limits: the policy with the limits; serve it with REDIS_URL)",
    )
    parser.add_argument("--litellm", default=DEFAULT_LITELLM, help="LiteLLM's executable (skipped when missing)")
    args = parser.parse_args(argv)
    args.litellm = Path(args.litellm) if Path(args.litellm).is_absolute() else ROOT / args.litellm
    if args.quick:
        args.rounds, args.duration, args.stream_samples = 1, 1, 30
    by_name = {w.name: w for w in WORKLOADS}
    if not set(args.workloads.split(",")) <= set(by_name):
        parser.error(f"--workloads names only {sorted(by_name)}")
    args.workloads = [w for w in WORKLOADS if w.name in args.workloads.split(",")]
    unknown = set(args.targets.split(",")) - set(ALL_TARGETS)
    if unknown or "limit" not in args.targets.split(","):
        parser.error(f"--targets must include limit and name only {ALL_TARGETS}; unknown: {sorted(unknown)}")
    return args


def make_targets(names: list[str], log_dir: Path, args: argparse.Namespace, notes: list[str]) -> list[Target]:
    targets = []
    for name in ALL_TARGETS:
        if name not in names:
            continue
        if name == "litellm" and not args.litellm.exists():
            notes.append(f"LiteLLM skipped: {args.litellm} not found; the × LiteLLM column is empty.")
            continue
        env = {}
        if name in LIMITED_TARGETS:
            if problem := redis_problem(args.redis_url):
                notes.append(f"{name} skipped: Redis at {args.redis_url} does not answer ({problem}).")
                continue
            # Closed: were Redis to fail during the run, requests would fail (503) rather than be quietly
            # served on each process's own counters, which would be measuring something else.
            env = {"REDIS_URL": args.redis_url, "REDIS_KEY_PREFIX": args.redis_prefix}
            env["RATE_LIMIT_REDIS_FAILURE"] = "closed"
        audited = name in ("aiproxy", "aiproxy-limits", "aiproxy-2w")
        label = TARGET_LABELS[name].format(redis=args.redis_url, prefix=args.redis_prefix)
        target = Target(name, label, free_port(), audited=audited, is_proxy=name != "limit", env=env)
        target.log_path = log_dir / f"{name}.log"
        targets.append(target)
    return targets


def start_all(targets: list[Target], args: argparse.Namespace, work_dir: Path) -> None:
    """Start every server at once (LiteLLM takes a while), then wait for each to answer."""
    limit = targets[0]
    start_limit(limit)
    for target in targets[1:]:
        if target.name == "litellm":
            start_litellm(target, binary=args.litellm, upstream_port=limit.port, work_dir=work_dir)
        else:
            start_aiproxy(
                target,
                upstream_port=limit.port,
                database_url=args.database_url,
                workers=2 if target.name == "aiproxy-2w" else 1,
                audit=target.name != "aiproxy-audit-off",
                log_level=args.log_level,
            )
    wait_ready(limit, "/v1/models", 20)
    for target in targets[1:]:
        path = "/health/liveliness" if target.name == "litellm" else "/health"
        wait_ready(target, path, 120 if target.name == "litellm" else 30)


def measure_everything(targets: list[Target], args: argparse.Namespace, settings: Settings) -> dict:
    """Start the servers, warm up, run the rounds, reconcile the audit log; always stop what was started."""
    prepare_database(args.database_url, targets)
    audit = AuditCounter(args.database_url)
    work_dir = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        start_all(targets, args, work_dir)
        warm_up(targets, settings, audit, quick=args.quick)
        runs = run_rounds(targets, args.workloads, settings, audit)
        final_rss = {t.name: [memory_kb(pid)[1] / 1024 for pid in worker_pids(t)] for t in targets}
        # gunicorn preloads the app in its master (gunicorn.conf.py): its memory is reported too.
        master_rss = {t.name: memory_kb(t.process.pid)[1] / 1024 for t in targets if t.process and t.is_proxy}
        exact = {}
        for target in (t for t in targets if t.key_id is not None):
            answered, rows = exact_audit_check(target, audit, EXACT_CHECK_REQUESTS)
            exact[target.name] = (EXACT_CHECK_REQUESTS, answered, rows, EXACT_CHECK_REQUESTS * target.audited)
        totals = reconcile_audit(targets, audit)
        for target in reversed(targets):
            stop(target.process)  # a stopped aiproxy has flushed its last settlements to Redis
        limits = {
            t.name: limiter_state(args.redis_url, args.redis_prefix, t.key_id, audit)
            for t in targets
            if t.name in LIMITED_TARGETS
        }
    finally:
        for target in reversed(targets):
            stop(target.process)
            if target.state_dir:
                shutil.rmtree(target.state_dir, ignore_errors=True)
        audit.close()
        shutil.rmtree(work_dir, ignore_errors=True)
    return {
        "runs": runs,
        "final_rss": final_rss,
        "master_rss": master_rss,
        "audit_totals": totals,
        "audit_exact": exact,
        "limits": limits,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.key_only:  # for the quick scripts (bench/servers.sh): the same configuration as the harness's
        target = Target(args.key_target, args.key_target, 0)
        prepare_database(args.database_url, [target])
        print(target.key)
        return 0
    # The servers run in sessions of their own: on SIGTERM, unwind through `finally` to stop them.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if shutil.which("wrk") is None:
        log("wrk not found (Debian: apt-get install wrk)")
        return 2
    settings = Settings(
        rounds=args.rounds,
        duration=args.duration,
        stream_samples=args.stream_samples,
        stream_budget=min(3.0, max(1.0, args.duration / 2)),
        warmup=1,
    )
    notes: list[str] = []
    if args.litellm != ROOT / DEFAULT_LITELLM and "litellm" in args.targets and args.litellm.exists():
        notes.append(
            f"LiteLLM from {args.litellm}: `make run` installs the same pinned version "
            f"(scripts/litellm-requirements.txt) into {DEFAULT_LITELLM}, where the harness looks by default."
        )
    if (ROOT / ".env").exists():
        notes.append("A .env exists at the repo root: aiproxy read it for every setting the harness does not set.")
    log_dir = Path(args.log_dir) if Path(args.log_dir).is_absolute() else ROOT / args.log_dir
    # Unique per run: the run's counters start from nothing and are told apart from any other user's.
    args.redis_prefix = f"aiproxy-bench-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}:"
    targets = make_targets(args.targets.split(","), log_dir, args, notes)
    context = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join(["python", "bench/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),  # before the run: the load average says how busy the machine already was
        "versions": versions(args.litellm if any(t.name == "litellm" for t in targets) else None),
        "settings": settings,
        "workloads": args.workloads,
        "target_notes": [t.label for t in targets],
        "notes": notes + [f"aiproxy ran with LOG_LEVEL={args.log_level}; servers' output is in {args.log_dir}/."],
    }
    started = time.monotonic()
    log(f"{args.database_url}: {', '.join(t.name for t in targets)}; {estimate(len(targets), settings, args)}")
    context.update(measure_everything(targets, args, settings))
    runs = context["runs"]
    summaries = [summarise(runs, t.name, w) for w in args.workloads for t in targets]
    text, ok = report(runs, summaries, context)
    out = Path(args.out) if Path(args.out).is_absolute() else ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    log(f"wrote {out} in {time.monotonic() - started:.0f} s; {'all checks passed' if ok else 'CHECKS FAILED'}")
    return 0 if ok else 1


def estimate(n_targets: int, settings: Settings, args: argparse.Namespace) -> str:
    wrk_runs = sum(not w.stream for w in args.workloads)
    per_round = n_targets * (wrk_runs * settings.duration + settings.stream_budget)
    warmup = 0 if args.quick else n_targets * (2 * settings.warmup + 2)
    return f"about {(settings.rounds * per_round + warmup) / 60:.1f} min of load"


if __name__ == "__main__":
    sys.exit(main())
