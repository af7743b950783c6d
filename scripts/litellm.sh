#!/usr/bin/env bash
# A real LiteLLM proxy on 127.0.0.1:4000 (LITELLM_PORT) from litellm_config.yaml, for the local run.
#   scripts/litellm.sh install   install it into .venv-litellm (first run only; its dependencies are
#                                large and must not mix with aiproxy's)
#   scripts/litellm.sh           install if needed, then serve in the foreground
# Needs LITELLM_MASTER_KEY to serve. Models are mocks unless their provider key is set (see
# litellm_config.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
VENV=.venv-litellm
LOCK=scripts/litellm-requirements.txt

# The lock's copy marks a finished install: an interrupted one, or a changed lock, installs again.
if ! cmp -s "$LOCK" "$VENV/.installed"; then
  echo "Installing LiteLLM into $VENV (first run only: a minute or more, about 750 MB)..." >&2
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$LOCK"
  cp "$LOCK" "$VENV/.installed"
fi
[ "${1:-}" = install ] && exit 0

: "${LITELLM_MASTER_KEY:?LITELLM_MASTER_KEY must be set}"
# Offline-safe: the model cost map comes from the package, not from the network.
export LITELLM_LOCAL_MODEL_COST_MAP=True
export LITELLM_DONT_SHOW_FEEDBACK_BOX=True
mkdir -p var/litellm
exec "$VENV/bin/python" scripts/litellm_config.py litellm_config.yaml var/litellm/config.yaml \
  "$VENV/bin/litellm" --config var/litellm/config.yaml --host 127.0.0.1 --port "${LITELLM_PORT:-4000}"
