"""The local run (`make run`): the LiteLLM config it renders, the demo setup it prints, the quickstart that must work.

The run itself installs LiteLLM (hundreds of MB), so it is not run here; README, "Run the full stack
locally", says how long it takes.
"""

import importlib.util
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.core.management import call_command

from policies.management.commands.ensure_demo_setup import SNIPPET
from policies.models import ApiKey
from tests.fake_upstream import DEFAULT_CONTENT, EMBEDDING_DIMENSIONS

ROOT = Path(__file__).resolve().parent.parent


def load_renderer():
    spec = importlib.util.spec_from_file_location("litellm_config", ROOT / "scripts" / "litellm_config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shipped_config() -> dict:
    return yaml.safe_load((ROOT / "litellm_config.yaml").read_text())


def test_every_shipped_model_is_a_mock_until_its_provider_key_is_set():
    config = shipped_config()
    names = {model["model_name"] for model in config["model_list"]}
    assert {"gpt-4o-mini", "gpt-4o", "text-embedding-3-small"} <= names
    for model in config["model_list"]:
        params = model["litellm_params"]
        assert params["api_key"].startswith("os.environ/"), model
        assert params["mock_response"], model
    embedding = next(m for m in config["model_list"] if m["model_name"] == "text-embedding-3-small")
    assert all(isinstance(x, float) for x in embedding["litellm_params"]["mock_response"])
    # Never a literal master key: the local run generates one per install.
    assert config["general_settings"]["master_key"] == "os.environ/LITELLM_MASTER_KEY"


def test_a_provider_key_turns_its_models_real():
    renderer = load_renderer()
    offline = renderer.effective_config(shipped_config(), {})
    assert all("mock_response" in m["litellm_params"] for m in offline["model_list"])

    with_openai = renderer.effective_config(shipped_config(), {"OPENAI_API_KEY": "sk-real"})
    real = {m["model_name"] for m in with_openai["model_list"] if "mock_response" not in m["litellm_params"]}
    assert real == {"gpt-4o-mini", "gpt-4o", "text-embedding-3-small"}

    empty = renderer.effective_config(shipped_config(), {"OPENAI_API_KEY": ""})
    assert all("mock_response" in m["litellm_params"] for m in empty["model_list"])


def test_the_renderer_writes_the_config_litellm_reads(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    target = tmp_path / "config.yaml"
    load_renderer().main([str(ROOT / "litellm_config.yaml"), str(target)])
    assert yaml.safe_load(target.read_text()) == shipped_config()


def test_the_scripts_parse():
    for script in sorted((ROOT / "scripts").glob("*.sh")):
        subprocess.run(["bash", "-n", str(script)], check=True)


def test_make_run_starts_the_full_stack_and_make_test_is_unchanged():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^run: migrate\n\t.*scripts/run_local\.sh$", makefile, re.MULTILINE)
    assert re.search(r"^test: install\n\t\$\(BIN\)/pytest -q$", makefile, re.MULTILINE)


def test_the_readme_quickstart_is_the_printed_snippet():
    readme = (ROOT / "README.md").read_text()
    assert SNIPPET.format(base_url="http://127.0.0.1:8000", key="aip-...") in readme


@pytest.mark.django_db(transaction=True)
def test_demo_setup_prints_a_snippet_that_works_as_printed(live):
    first = io.StringIO()
    call_command("ensure_demo_setup", base_url=live.url, stdout=first)
    output = first.getvalue()
    assert re.search(r"user: admin  password: \S+  \(shown once\)", output)
    snippet = output[output.index("from openai import OpenAI") :]

    completed = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=60)

    assert completed.returncode == 0, completed.stderr
    chat, streamed, embedding, models = completed.stdout.splitlines()
    assert chat == streamed == DEFAULT_CONTENT
    assert embedding == f"{EMBEDDING_DIMENSIONS} dimensions"
    assert "gpt-4o-mini" in models

    again = io.StringIO()
    call_command("ensure_demo_setup", base_url=live.url, stdout=again)
    assert "exists (keys are shown only once)" in again.getvalue()
    assert "password: " not in again.getvalue()
    assert ApiKey.objects.count() == 1


def test_the_snippet_can_be_pasted_into_an_interactive_python():
    """Pasted line by line, as into `python`: a block must end with a blank line before the next statement."""
    import code

    errors = []

    class Console(code.InteractiveConsole):
        def runcode(self, compiled):  # compile only: nothing is sent anywhere
            pass

        def showsyntaxerror(self, filename=None, **kwargs):
            errors.append(filename)

    console = Console()
    for line in SNIPPET.format(base_url="http://127.0.0.1:8000", key="aip-...").splitlines():
        console.push(line)

    assert errors == []
