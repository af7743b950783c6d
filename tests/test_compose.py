"""docker-compose.yml, Dockerfile and gunicorn.conf.py, checked by reading them: no Docker engine runs here."""

import re
import runpy
from pathlib import Path

import pytest
import yaml
from gunicorn.config import KNOWN_SETTINGS

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_the_stack_has_its_services_each_with_a_health_check(services):
    assert {"postgres", "litellm", "aiproxy", "redis"} <= services.keys()
    assert "profiles" not in services["redis"], "limits are part of the default stack"
    for name, service in services.items():
        assert service["healthcheck"]["test"], name
        if "image" in service:  # pinned, never :latest
            assert re.fullmatch(r"[^:]+:[\w.-]+", service["image"]), name
            assert not service["image"].endswith(":latest"), name


def test_aiproxy_shares_its_limits_through_the_stacks_redis_which_keeps_its_counts(services):
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert services["aiproxy"]["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert services["aiproxy"]["depends_on"]["redis"] == {"condition": "service_healthy"}
    # A budget's spend must survive a restart of Redis.
    assert "--appendonly" in services["redis"]["command"]
    assert services["redis"]["command"][services["redis"]["command"].index("--appendonly") + 1] == "yes"
    assert "redis-data:/data" in services["redis"]["volumes"]
    assert "redis-data" in compose["volumes"]


def test_postgres_keeps_its_data_in_a_volume(services):
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert "postgres-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert "postgres-data" in compose["volumes"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")


def test_litellm_runs_the_shipped_config_at_the_local_runs_version(services):
    litellm = services["litellm"]
    locked = re.search(r"^litellm\[proxy\]==(\S+)$", (ROOT / "scripts/litellm-requirements.txt").read_text(), re.M)
    assert litellm["image"] == f"ghcr.io/berriai/litellm:v{locked.group(1)}"
    mounts = {volume.split(":")[0]: volume.split(":")[1] for volume in litellm["volumes"]}
    assert mounts["./litellm_config.yaml"] in litellm["entrypoint"]
    assert mounts["./scripts/litellm_config.py"] in litellm["entrypoint"]
    assert litellm["entrypoint"][litellm["entrypoint"].index("litellm") :][:2] == ["litellm", "--config"]
    environment = litellm["environment"]
    assert environment["LITELLM_MASTER_KEY"].startswith("${LITELLM_MASTER_KEY:?")
    assert environment["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    assert "4000/health/liveliness" in str(litellm["healthcheck"]["test"])


def test_aiproxy_is_wired_to_postgres_and_litellm(services):
    aiproxy = services["aiproxy"]
    assert aiproxy["build"] == "."
    assert aiproxy["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
        "litellm": {"condition": "service_healthy"},
    }
    assert aiproxy["env_file"] == ".env"
    environment = aiproxy["environment"]
    assert environment["DATABASE_URL"] == "postgres://aiproxy:${POSTGRES_PASSWORD}@postgres:5432/aiproxy"
    assert environment["LITELLM_BASE_URL"] == "http://litellm:4000"
    assert environment["LITELLM_API_KEY"] == "${LITELLM_MASTER_KEY}"
    assert environment["DEBUG"] == "false"
    assert environment["SECRET_KEY"].startswith("${SECRET_KEY:?")
    assert "aiproxy" in environment["ALLOWED_HOSTS"]  # how a scraper on the compose network names it
    assert "8000/health" in str(aiproxy["healthcheck"]["test"])
    assert "audit-spool:/app/var/audit-spool" in aiproxy["volumes"]


def test_aiproxy_reads_every_variable_compose_sets_for_it(services):
    readers = (ROOT / "aiproxy/settings.py").read_text() + (ROOT / "gunicorn.conf.py").read_text()
    for name in services["aiproxy"]["environment"]:
        assert f'"{name}"' in readers, f"{name} is set by compose but read by nothing"


def test_the_image_is_slim_runs_as_a_user_migrates_and_serves_with_gunicorn(dockerfile):
    assert re.search(r"^FROM python:3\.11\.\d+-slim", dockerfile, re.M)
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users
    assert users[-1] not in ("root", "0")
    assert "/health" in re.search(r"^HEALTHCHECK .*(?:\n .*)*", dockerfile, re.M).group(0)
    assert 'ENTRYPOINT ["scripts/docker-entrypoint.sh"]' in dockerfile
    assert 'CMD ["gunicorn", "-c", "gunicorn.conf.py"]' in dockerfile
    entrypoint = (ROOT / "scripts/docker-entrypoint.sh").read_text()
    assert "manage.py migrate --noinput" in entrypoint
    assert 'exec "$@"' in entrypoint


def test_the_build_context_leaves_out_local_state_and_secrets():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".venv-litellm", ".env", "db.sqlite3", "var"} <= ignored


def test_gunicorn_settings_come_from_the_environment(monkeypatch, tmp_path):
    # Set first, so that the config's setdefault leaves this test process's environment as it was.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    monkeypatch.setenv("GUNICORN_TIMEOUT", "45")
    monkeypatch.setenv("GUNICORN_GRACEFUL_TIMEOUT", "20")
    monkeypatch.setenv("GUNICORN_BIND", "0.0.0.0:9000")
    config = runpy.run_path(str(ROOT / "gunicorn.conf.py"))

    assert config["worker_class"] == "uvicorn_worker.UvicornWorker"
    assert (config["workers"], config["timeout"], config["graceful_timeout"]) == (3, 45, 20)
    assert config["bind"] == "0.0.0.0:9000"
    # Every lowercase name it sets is a gunicorn setting or hook (a typo would be silently ignored).
    known = {setting.name for setting in KNOWN_SETTINGS}
    names = {name for name in config if name.islower() and not name.startswith("_")}
    assert names - {"os", "path", "metrics_dir"} <= known

    (tmp_path / "histogram_123.db").write_bytes(b"stale")
    config["on_starting"](None)
    assert not list(tmp_path.glob("*.db"))
