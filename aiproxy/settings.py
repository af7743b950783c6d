"""aiproxy settings: everything comes from the environment (django-environ)."""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# The OS environment wins over .env, which is optional and for local use only.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set SECRET_KEY in the environment, or DEBUG=true for local development only."
        )
    SECRET_KEY = "insecure-development-only-secret-key"  # noqa: S105

# API keys are stored as HMAC-SHA256(API_KEY_PEPPER, key). A separate pepper lets
# SECRET_KEY rotate (sessions, signing) without invalidating every API key.
API_KEY_PEPPER = env.str("API_KEY_PEPPER", default=SECRET_KEY)

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Behind TLS (README, "Serving in production"): cookies only over HTTPS, and the proxy's word for the scheme.
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=False)
_ssl_header = env.str("SECURE_PROXY_SSL_HEADER", default="")  # e.g. "HTTP_X_FORWARDED_PROTO,https"
SECURE_PROXY_SSL_HEADER = tuple(_ssl_header.split(",", 1)) if "," in _ssl_header else None

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "policies",
    "proxy",
]

# Every middleware here is async-capable: a sync-only one would add a thread hop
# to every /v1 request.
MIDDLEWARE = [
    "proxy.middleware.RequestContextMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# The proxy's own paths (/v1, /health, /ready) run this shorter chain: see aiproxy/asgi.py.
PROXY_MIDDLEWARE = [
    "proxy.middleware.RequestContextMiddleware",
    "corsheaders.middleware.CorsMiddleware",
]

ROOT_URLCONF = "aiproxy.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

ASGI_APPLICATION = "aiproxy.asgi.application"

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Persistent connections leak under ASGI; the psycopg pool reuses them instead.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DATABASE_POOL_MIN", default=1),
        "max_size": env.int("DATABASE_POOL_MAX", default=10),
        # How long a thread waits for a pooled connection: short, so an outage fails fast.
        "timeout": env.float("DATABASE_POOL_TIMEOUT", default=5.0),
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "var" / "static")

# --- the upstream (LiteLLM) -------------------------------------------------
LITELLM_BASE_URL = env.str("LITELLM_BASE_URL", default="http://127.0.0.1:4000").rstrip("/")
LITELLM_API_KEY = env.str("LITELLM_API_KEY", default="")
# Upstream response headers about the upstream itself (x-litellm-*, llm_provider-*) are dropped, except these.
UPSTREAM_RELAY_HEADERS = frozenset(name.lower() for name in env.list("UPSTREAM_RELAY_HEADERS", default=[]))
# What an upstream may make a worker hold: one SSE event (an over-size stream ends with an error event),
# and a JSON answer to rewrite (a larger one is relayed unchanged, unredacted, and flagged in its record).
# Characters a stream may hold back while a redaction's match may still be in progress; past it the
# held text is sent as the replacement and the rest of that answer part withheld (fail closed).
STREAM_REDACTION_HOLD_MAX = env.int("STREAM_REDACTION_HOLD_MAX", default=8192)
STREAM_EVENT_MAX_BYTES = env.int("STREAM_EVENT_MAX_BYTES", default=1024 * 1024)
JSON_REWRITE_MAX_BYTES = env.int("JSON_REWRITE_MAX_BYTES", default=16 * 1024 * 1024)
# Client request headers forwarded upstream besides the built-in allowlist: names, or prefixes ending in "*".
_forward = [name.lower() for name in env.list("UPSTREAM_FORWARD_HEADERS", default=[])]
UPSTREAM_FORWARD_HEADERS = (
    frozenset(n for n in _forward if not n.endswith("*")),
    tuple(n[:-1] for n in _forward if n.endswith("*")),
)
UPSTREAM_CONNECT_TIMEOUT = env.float("UPSTREAM_CONNECT_TIMEOUT", default=5.0)
# Streams can be silent for a long time while a model thinks.
UPSTREAM_READ_TIMEOUT = env.float("UPSTREAM_READ_TIMEOUT", default=600.0)
UPSTREAM_POOL_TIMEOUT = env.float("UPSTREAM_POOL_TIMEOUT", default=10.0)
UPSTREAM_MAX_CONNECTIONS = env.int("UPSTREAM_MAX_CONNECTIONS", default=200)
# Idle upstream connections are dropped before the upstream drops them (uvicorn, under LiteLLM: 5 s):
# a request sent on a connection the server is closing fails, and a POST is not retried.
UPSTREAM_KEEPALIVE_SECONDS = env.float("UPSTREAM_KEEPALIVE_SECONDS", default=4.0)

# --- request limits -------------------------------------------------------------
MAX_REQUEST_BYTES = env.int("MAX_REQUEST_BYTES", default=20 * 1024 * 1024)
# Requests with images are larger than Django's 2.5 MB default.
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BYTES
FILE_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BYTES

# --- API keys and policies --------------------------------------------------------
# How often each worker checks whether keys or policies changed (seconds).
CONFIG_POLL_INTERVAL = env.float("CONFIG_POLL_INTERVAL", default=1.0)
# Upper bound on how long a cached key or policy is trusted without a check.
CONFIG_CACHE_MAX_AGE = env.float("CONFIG_CACHE_MAX_AGE", default=30.0)
# Keys (known and unknown) a worker remembers: bounded, so that a flood of made-up keys costs no memory.
CONFIG_CACHE_MAX_KEYS = env.int("CONFIG_CACHE_MAX_KEYS", default=10_000)
ENABLE_REQUEST_MODIFICATION = env.bool("ENABLE_REQUEST_MODIFICATION", default=True)
ENABLE_RESPONSE_MODIFICATION = env.bool("ENABLE_RESPONSE_MODIFICATION", default=True)

# --- CORS -------------------------------------------------------------------------
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])
CORS_ALLOW_HEADERS = [
    "authorization",
    "api-key",
    "content-type",
    "x-request-id",
    "openai-organization",
    "openai-project",
]
CORS_EXPOSE_HEADERS = ["x-request-id", "x-aiproxy-time-ms", "x-aiproxy-policy", "x-aiproxy-policy-version"]

# --- REST API -------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "aiproxy audit API",
    "DESCRIPTION": "Read-only access to aiproxy's audit log.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
}

# --- logging --------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
LOG_FORMAT = env.str("LOG_FORMAT", default="json")  # json | text
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "aiproxy.logging.JsonFormatter"},
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django's own request logger would repeat our access line, in text.
        "django.request": {"level": "ERROR"},
        "django.server": {"level": "ERROR"},
    },
}

# --- audit log ------------------------------------------------------------------
AUDIT_ENABLED = env.bool("AUDIT_ENABLED", default=True)
# Records are appended here before the response ends, so a killed worker loses none.
AUDIT_SPOOL_DIR = env.path("AUDIT_SPOOL_DIR", default=BASE_DIR / "var" / "audit-spool")
AUDIT_BATCH_SIZE = env.int("AUDIT_BATCH_SIZE", default=500)
AUDIT_FLUSH_INTERVAL = env.float("AUDIT_FLUSH_INTERVAL", default=0.05)
AUDIT_QUEUE_MAX = env.int("AUDIT_QUEUE_MAX", default=10_000)
# Bodies larger than this are truncated in the record (and flagged).
AUDIT_MAX_BODY_BYTES = env.int("AUDIT_MAX_BODY_BYTES", default=256 * 1024)
# Default retention for purge_audit when a policy sets none (days).
AUDIT_RETENTION_DAYS = env.int("AUDIT_RETENTION_DAYS", default=90)

# --- metrics --------------------------------------------------------------------
# GET /metrics (Prometheus) answers clients from these networks only, and when METRICS_TOKEN
# is set, only with `Authorization: Bearer <METRICS_TOKEN>`. Both apply when both are set.
METRICS_ENABLED = env.bool("METRICS_ENABLED", default=True)
METRICS_ALLOWED_NETWORKS = env.list("METRICS_ALLOWED_NETWORKS", default=["127.0.0.0/8", "::1/128"])
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

# --- Limits (proxy/limiter.py) -------------------------------------------------------------
# Shared by every worker and instance through Redis; without REDIS_URL each process keeps its own.
REDIS_URL = env.str("REDIS_URL", default="")
# A Redis slower than this counts as down (seconds): a request never waits longer for its limits.
REDIS_TIMEOUT = env.float("REDIS_TIMEOUT", default=0.25)
REDIS_KEY_PREFIX = env.str("REDIS_KEY_PREFIX", default="aiproxy:")
# Redis down: "open" serves with each process's own counters (/ready says degraded); "closed" answers 503.
RATE_LIMIT_REDIS_FAILURE = env.str("RATE_LIMIT_REDIS_FAILURE", default="open")
if RATE_LIMIT_REDIS_FAILURE not in ("open", "closed"):
    raise ImproperlyConfigured('RATE_LIMIT_REDIS_FAILURE must be "open" or "closed".')
# A concurrency slot's lease: its worker renews it; a killed worker's slots free themselves after this.
LIMITS_LEASE_SECONDS = env.float("LIMITS_LEASE_SECONDS", default=30.0)
# The answer's share of a token estimate when the request sets no output cap and the policy no ceiling.
LIMITS_DEFAULT_OUTPUT_TOKENS = env.int("LIMITS_DEFAULT_OUTPUT_TOKENS", default=1024)
