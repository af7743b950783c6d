"""gunicorn settings for aiproxy: uvicorn workers, sized and timed from the environment.

gunicorn -c gunicorn.conf.py aiproxy.asgi:application
"""

import os
from pathlib import Path

wsgi_app = "aiproxy.asgi:application"
worker_class = "uvicorn_worker.UvicornWorker"
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
# Async workers: one per core is enough; each holds its own upstream pool and audit writer.
workers = int(os.environ.get("WEB_CONCURRENCY", os.cpu_count() or 1))
# A worker's event loop reports in this often; long streams do not count against it.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
# On SIGTERM, open requests (streams included) get this long before their worker is killed;
# audit records are spooled to disk before a response ends, so a kill loses none.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
# Longer than the idle timeout of a load balancer in front, so it never reuses a closed connection.
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "75"))
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))
max_requests_jitter = max_requests // 10
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
proc_name = "aiproxy"
# The app is imported once, in the master, and the workers are forked from it: each worker then maps
# only the library pages it uses (5-8 MB less RSS per worker, measured; less memory in all from two
# workers up, ~8 MB more with one: the master's copy). Nothing opens a thread, a connection or an
# event loop at import: those start in each worker's lifespan. A HUP restarts the workers on the code
# already loaded: deploy new code with a restart.
preload_app = True
# gunicorn's control socket is one per user (~/.gunicorn/gunicorn.ctl): a second gunicorn on the
# machine (the tests, another checkout) would contend for it, and nothing here uses gunicornc.
control_socket_disable = True
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
accesslog = None  # aiproxy writes its own access line per request, in JSON
errorlog = "-"

# Prometheus multiprocess mode: every worker writes its metrics to files here and /metrics adds
# them up. Set before the workers are forked, since prometheus_client reads it at import.
metrics_dir = Path(os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(Path(__file__).parent / "var" / "metrics")))


def on_starting(server) -> None:
    # A previous run's workers' counts would otherwise be added to this run's.
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in metrics_dir.glob("*.db"):
        stale.unlink()


def when_ready(server) -> None:
    import gc

    # Just before the workers are forked: what the master loaded is never garbage; frozen, the
    # workers' collections neither scan it nor write to (and so copy) its pages.
    gc.collect()
    gc.freeze()


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    # A dead worker's live gauges (its audit backlog) must not count any more.
    multiprocess.mark_process_dead(worker.pid)
