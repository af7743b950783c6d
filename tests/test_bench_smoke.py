"""The benchmark harness runs end to end: `bench/run.py --quick` against the limit and aiproxy.

It proves the harness works (servers start, wrk and the stream client run, the audit checks pass,
a table with numbers comes out); it asserts no timing. Needs wrk and PostgreSQL (the harness serves
aiproxy from separate gunicorn processes, which cannot share an SQLite test database). The harness
gets a scratch database of its own on the same server, dropped afterwards.
"""

import os
import re
import shutil
import subprocess
import sys

import psycopg
import pytest
from django.conf import settings

from tests.processes import ROOT

DATABASE = settings.DATABASES["default"]

pytestmark = [
    pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed"),
    pytest.mark.skipif(DATABASE["ENGINE"] != "django.db.backends.postgresql", reason="needs PostgreSQL"),
]

NUMBER = r"[\d,]+(?:\.\d+)?"


def server_url(name: str) -> str:
    password = f":{DATABASE['PASSWORD']}" if DATABASE.get("PASSWORD") else ""
    host, port = DATABASE.get("HOST") or "127.0.0.1", DATABASE.get("PORT") or 5432
    return f"postgres://{DATABASE['USER']}{password}@{host}:{port}/{name}"


@pytest.fixture
def scratch_database_url():
    name = f"aiproxy_bench_smoke_{os.getpid()}"
    yield server_url(name)
    with psycopg.connect(server_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def table_rows(section: str) -> list[list[str]]:
    """The cells of every markdown table row in `section`."""
    return [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in section.splitlines() if ln.startswith("| ")]


def row(rows: list[list[str]], *first: str) -> list[str]:
    found = [r for r in rows if r[: len(first)] == list(first)]
    assert len(found) == 1, f"expected one row starting {first}, found {len(found)}"
    return found[0]


def test_quick_run_produces_a_table_with_numbers_and_no_errors(tmp_path, scratch_database_url):
    out = tmp_path / "benchmarks.md"
    command = [sys.executable, "bench/run.py", "--quick", "--targets", "limit,aiproxy", "--out", str(out)]
    command += ["--database-url", scratch_database_url, "--log-dir", str(tmp_path / "logs")]
    harness = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = harness.communicate(timeout=120)
    finally:
        if harness.poll() is None:
            harness.terminate()  # SIGTERM: the harness stops the servers it started
            harness.communicate(timeout=30)

    assert harness.returncode == 0, stderr[-3000:]
    report = out.read_text()
    assert report in stdout  # also printed
    load, rest = report.split("## Streaming", 1)
    load_rows, stream_rows = table_rows(load.split("## Non-streaming", 1)[1]), table_rows(rest.split("## Checks")[0])
    for workload in ("chat c1", "chat c10", "chat c50", "embeddings c10"):
        for target in ("limit", "aiproxy"):
            _, _, rps, p50, p99, *_, errors, _, _ = row(load_rows, workload, target)
            assert all(re.fullmatch(NUMBER, value) for value in (rps, p50, p99)), (workload, target)
            assert errors == "0"
    for target in ("limit", "aiproxy"):
        _, samples, headers, first_event, done, *_, errors = row(stream_rows, target)
        assert int(samples) > 0
        assert all(re.fullmatch(rf"{NUMBER} / {NUMBER}", value) for value in (headers, first_event, done))
        assert errors == "0"
    assert "| aiproxy | **exact check**" in report
    assert "**failed**" not in report
