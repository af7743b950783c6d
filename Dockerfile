# aiproxy under gunicorn with uvicorn workers. Built by docker-compose.yml; see README, Docker.
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GUNICORN_BIND=0.0.0.0:8000

WORKDIR /app
# Requirements first: the dependency layer is rebuilt only when they change.
COPY requirements.txt .
RUN pip install -r requirements.txt

# The code stays root's, read-only to the app; only var/ is the app user's: the audit spool
# (a volume in docker-compose.yml) and the workers' Prometheus files.
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin aiproxy
COPY . .
# collectstatic: the admin's files in STATIC_ROOT (var/static), for whatever serves /static/.
RUN mkdir -p var/audit-spool var/metrics && chown -R aiproxy:aiproxy var \
    && DEBUG=true python manage.py collectstatic --noinput --verbosity 0

USER aiproxy
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"]
ENTRYPOINT ["scripts/docker-entrypoint.sh"]
CMD ["gunicorn", "-c", "gunicorn.conf.py"]
