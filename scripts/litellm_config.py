"""Writes litellm_config.yaml as LiteLLM should run here (mock models unless their key is set), then runs a command.

python scripts/litellm_config.py SOURCE TARGET [COMMAND ...]

Used by scripts/litellm.sh and by the litellm service of docker-compose.yml, so that one shipped
config serves mock models offline and real ones once a provider key is in the environment.
Needs only PyYAML, which LiteLLM itself depends on.
"""

import os
import sys
from collections.abc import Mapping

import yaml

ENV_PREFIX = "os.environ/"


def effective_config(config: dict, environ: Mapping[str, str]) -> dict:
    """The config with `mock_response` removed from every model whose `api_key: os.environ/NAME` is set."""
    for model in config.get("model_list", []):
        params = model["litellm_params"]
        key = params.get("api_key")
        if isinstance(key, str) and key.startswith(ENV_PREFIX) and environ.get(key.removeprefix(ENV_PREFIX)):
            params.pop("mock_response", None)
    return config


def main(argv: list[str]) -> None:
    source, target, *command = argv
    with open(source) as file:
        config = effective_config(yaml.safe_load(file), os.environ)
    with open(target, "w") as file:
        yaml.safe_dump(config, file, sort_keys=False)
    for model in config.get("model_list", []):
        kind = "mock" if "mock_response" in model["litellm_params"] else "real"
        print(f"LiteLLM model {model['model_name']}: {kind}", file=sys.stderr)
    if command:
        os.execvp(command[0], command)  # noqa: S606 (our caller's command line, as given)


if __name__ == "__main__":
    main(sys.argv[1:])
