"""`make run` stops the whole stack however it is stopped: SIGTERM to `make` (which passes it on), SIGHUP to
the terminal's process group (a closed terminal, as Ctrl-C is SIGINT to it), or `make` killed outright.

The real run installs LiteLLM (hundreds of MB); here the script's LITELLM_COMMAND runs the test suite's
fake upstream in its place, on free ports, so what is tested is the script's own process handling.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.processes import free_port

ROOT = Path(__file__).resolve().parent.parent


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_until(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


STOPS = {
    "SIGTERM to make": lambda make: make.send_signal(signal.SIGTERM),
    "SIGHUP to the process group": lambda make: os.killpg(make.pid, signal.SIGHUP),
    "make killed": lambda make: make.send_signal(signal.SIGKILL),
}


def leftovers(litellm_port: int, aiproxy_port: int) -> str:
    pattern = f"port {litellm_port}|127.0.0.1:{aiproxy_port}"
    return subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True).stdout


@pytest.mark.parametrize("stop", STOPS.values(), ids=STOPS.keys())
def test_stopping_make_stops_litellm_and_gunicorn(tmp_path, stop):
    litellm_port, aiproxy_port = free_port(), free_port()
    env = {
        **os.environ,
        "LITELLM_PORT": str(litellm_port),
        "AIPROXY_PORT": str(aiproxy_port),
        "LITELLM_COMMAND": f"{sys.executable} -m tests.fake_upstream --port {litellm_port} --no-record",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'run.sqlite3'}",
        "WEB_CONCURRENCY": "1",
        "STATIC_ROOT": str(tmp_path / "static"),
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the run serves the project's own settings, not the tests'
    log = open(tmp_path / "make.log", "w")
    make = subprocess.Popen(
        ["make", "run"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        served = wait_until(lambda: "Serving." in (tmp_path / "make.log").read_text(), 120)
        assert served, (tmp_path / "make.log").read_text()
        assert listening(litellm_port)
        assert listening(aiproxy_port)

        stop(make)
        make.wait(timeout=45)

        stopped = wait_until(lambda: not listening(litellm_port) and not listening(aiproxy_port), 45)
        assert stopped, "still listening:\n" + (tmp_path / "make.log").read_text()
        # Not only the ports: nothing of the stack is left running (the next `make run` starts clean).
        assert wait_until(lambda: not leftovers(litellm_port, aiproxy_port), 15), leftovers(litellm_port, aiproxy_port)
    finally:
        if make.poll() is None:
            make.kill()
        subprocess.run(["pkill", "-f", f"port {litellm_port}|127.0.0.1:{aiproxy_port}"], check=False)
        log.close()
