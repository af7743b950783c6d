"""Policies end to end: what the upstream receives and what the OpenAI SDK gets back."""

import json
import time

import openai
import pytest

from policies.models import Policy

pytestmark = pytest.mark.django_db(transaction=True)

HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture
def policy_client(live, make_key):
    """An SDK client whose key runs under a policy built from the given fields."""

    def build(**fields) -> openai.OpenAI:
        policy = Policy.objects.create(name=fields.pop("name", "under-test"), **fields)
        key = make_key("policy-app", policy=policy)
        return openai.OpenAI(base_url=live.url + "/v1", api_key=key, max_retries=0, timeout=10)

    return build


def sent_body(fake_upstream) -> dict:
    return fake_upstream.last_request.json


@pytest.mark.parametrize(
    ("mode", "messages", "expected_roles_and_text"),
    [
        ("if_missing", HI, [("system", "Be terse."), ("user", "Hi")]),
        ("if_missing", [{"role": "system", "content": "Mine."}, *HI], [("system", "Mine."), ("user", "Hi")]),
        (
            "prepend",
            [{"role": "system", "content": "Mine."}, *HI],
            [("system", "Be terse."), ("system", "Mine."), ("user", "Hi")],
        ),
        ("replace", [{"role": "system", "content": "Mine."}, *HI], [("system", "Be terse."), ("user", "Hi")]),
    ],
)
def test_system_context_modes(policy_client, fake_upstream, mode, messages, expected_roles_and_text):
    client = policy_client(system_context="Be terse.", system_context_mode=mode)

    client.chat.completions.create(model="gpt-4o", messages=messages)

    assert [(m["role"], m["content"]) for m in sent_body(fake_upstream)["messages"]] == expected_roles_and_text


def test_completions_prompt_gets_the_context_prefix(policy_client, fake_upstream):
    client = policy_client(system_context="Be terse.")

    client.completions.create(model="gpt-3.5-turbo", prompt="Say hi")

    assert sent_body(fake_upstream)["prompt"] == "Be terse.\n\nSay hi"


def test_defaults_yield_to_the_client_and_overrides_win(policy_client, fake_upstream):
    client = policy_client(param_defaults={"temperature": 0.3, "top_p": 0.9}, param_overrides={"presence_penalty": 0.5})

    client.chat.completions.create(model="gpt-4o", messages=HI, temperature=1.0, presence_penalty=2.0)

    sent = sent_body(fake_upstream)
    assert sent["temperature"] == 1.0
    assert sent["top_p"] == 0.9
    assert sent["presence_penalty"] == 0.5


def test_per_model_rules(policy_client, fake_upstream):
    client = policy_client(model_rules=[{"pattern": "gpt-4*", "defaults": {"temperature": 0.1}}])

    client.chat.completions.create(model="gpt-4o", messages=HI)
    gpt4_temperature = sent_body(fake_upstream).get("temperature")
    client.chat.completions.create(model="gpt-3.5-turbo", messages=HI)

    assert gpt4_temperature == 0.1
    assert "temperature" not in sent_body(fake_upstream)


def test_token_ceiling_clamps_max_tokens(policy_client, fake_upstream):
    client = policy_client(max_tokens_ceiling=100)

    client.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=5000)

    assert sent_body(fake_upstream)["max_tokens"] == 100


def test_forbidden_model_is_403(policy_client, fake_upstream):
    client = policy_client(allowed_models=["gpt-4o-mini"])

    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=HI)

    assert caught.value.code == "model_not_allowed"
    assert fake_upstream.requests == []


def test_alias_is_resolved_upstream(policy_client, fake_upstream):
    client = policy_client(model_aliases={"fast": "gpt-4o-mini"}, allowed_models=["gpt-4o"])

    client.chat.completions.create(model="fast", messages=HI)

    assert sent_body(fake_upstream)["model"] == "gpt-4o-mini"


def test_models_list_shows_only_allowed_models_and_aliases(policy_client):
    client = policy_client(allowed_models=["gpt-4o*"], model_aliases={"fast": "gpt-4o-mini"})

    ids = sorted(model.id for model in client.models.list())

    assert ids == ["fast", "gpt-4o", "gpt-4o-mini"]


def test_proxy_info_is_visible_to_the_sdk(policy_client):
    client = policy_client(
        name="annotated", annotate_responses=True, annotation_extra={"team": "search"}, param_defaults={"top_p": 0.5}
    )

    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
    completion = raw.parse()

    info = completion.model_extra["_proxy_info"]
    assert info["policy"] == "annotated"
    assert info["policy_version"] == 1
    assert info["original_model"] == "gpt-4o"
    assert "default:top_p" in info["modifications"]
    assert info["team"] == "search"
    assert completion.usage.model_extra["aiproxy_processing_ms"] >= 0
    assert raw.headers["x-aiproxy-policy"] == "annotated"
    assert raw.headers["x-aiproxy-policy-version"] == "1"


def test_redaction_in_a_plain_response(policy_client):
    client = policy_client(response_redactions=[{"pattern": r"fake \w+", "replacement": "[redacted]"}])

    completion = client.chat.completions.create(model="gpt-4o", messages=HI)

    assert completion.choices[0].message.content == "Hello from [redacted]"


def test_redaction_across_a_split_in_a_stream(policy_client):
    client = policy_client(response_redactions=[{"pattern": r"secret-\d+", "replacement": "[redacted]"}])
    pieces = ["The code is sec", "ret-12", "34, keep it."]

    with client.chat.completions.create(
        model="gpt-4o", messages=HI, stream=True, extra_headers={"x-fake-chunks": json.dumps(pieces)}
    ) as stream:
        policy_header = stream.response.headers["x-aiproxy-policy"]
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

    assert text == "The code is [redacted], keep it."
    assert policy_header == "under-test"


def test_blocked_pattern_is_400_naming_the_rule(policy_client, fake_upstream):
    client = policy_client(blocked_patterns=[{"name": "no-ssn", "pattern": r"\b\d{3}-\d{2}-\d{4}\b"}])

    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "my ssn is 123-45-6789"}])

    assert caught.value.code == "content_policy_violation"
    assert "no-ssn" in caught.value.message
    assert fake_upstream.requests == []


def test_request_modification_switch_off_forwards_the_original(policy_client, fake_upstream, settings):
    settings.ENABLE_REQUEST_MODIFICATION = False
    client = policy_client(system_context="Be terse.", param_overrides={"temperature": 0})

    client.chat.completions.create(model="gpt-4o", messages=HI)

    assert sent_body(fake_upstream) == {"model": "gpt-4o", "messages": HI}


def test_response_modification_switch_off_returns_the_upstream_answer(policy_client, settings):
    settings.ENABLE_RESPONSE_MODIFICATION = False
    client = policy_client(annotate_responses=True, response_redactions=[{"pattern": "fake", "replacement": "x"}])

    completion = client.chat.completions.create(model="gpt-4o", messages=HI)

    assert completion.choices[0].message.content == "Hello from fake upstream"
    assert "_proxy_info" not in (completion.model_extra or {})


def test_policy_edit_takes_effect_without_restart(policy_client, fake_upstream):
    client = policy_client(system_context="Version one.")
    client.chat.completions.create(model="gpt-4o", messages=HI)
    assert sent_body(fake_upstream)["messages"][0]["content"] == "Version one."

    policy = Policy.objects.get(name="under-test")
    policy.system_context = "Version two."
    policy.save()

    deadline = time.monotonic() + 2
    while True:
        client.chat.completions.create(model="gpt-4o", messages=HI)
        if sent_body(fake_upstream)["messages"][0]["content"] == "Version two.":
            break
        assert time.monotonic() < deadline, "policy change not applied within 2 s"
        time.sleep(0.05)


def test_default_policy_applies_to_keys_without_one(live, alice_key, fake_upstream):
    Policy.objects.create(name="house-rules", is_default=True, system_context="House rules.")
    client = openai.OpenAI(base_url=live.url + "/v1", api_key=alice_key, max_retries=0)

    client.chat.completions.create(model="gpt-4o", messages=HI)

    assert sent_body(fake_upstream)["messages"][0] == {"role": "system", "content": "House rules."}
