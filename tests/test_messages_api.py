"""Anthropic's Messages API through aiproxy, as the Anthropic SDK uses it: the policy applies, audited whole."""

import json

import anthropic
import pytest

from policies.models import Policy
from tests.test_audit_completeness import records_of

pytestmark = pytest.mark.django_db(transaction=True)

HI = [{"role": "user", "content": "Hi"}]
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TOOL_CALL = json.dumps({"name": "get_weather", "arguments": json.dumps({"city": "Paris"})})
KEY_REDACTION = [{"pattern": r"sk-[A-Za-z0-9]{8,}", "replacement": "[key]"}]


@pytest.fixture
def client_for(live, make_key):
    """An Anthropic SDK client (key sent as x-api-key) whose key runs under a policy built from the given fields."""

    def build(**fields) -> anthropic.Anthropic:
        policy = Policy.objects.create(name=fields.pop("name", "messages-policy"), **fields)
        key = make_key("claude-app", policy=policy)
        return anthropic.Anthropic(base_url=live.url, api_key=key, max_retries=0, timeout=10)

    return build


def sent(fake_upstream, path: str = "/v1/messages") -> dict:
    [request] = fake_upstream.requests_for(path)
    return request.json


def test_plain_create_reaches_the_upstream_with_anthropic_headers(client_for, fake_upstream):
    client = client_for()

    message = client.messages.create(
        model="claude-haiku", max_tokens=50, messages=HI, extra_headers={"x-fake-content": "Hello there"}
    )

    assert message.content[0].text == "Hello there"
    [request] = fake_upstream.requests_for("/v1/messages")
    assert request.headers["anthropic-version"]
    assert "x-api-key" not in request.headers


def test_an_alias_resolves_and_a_forbidden_model_is_403(client_for, fake_upstream):
    client = client_for(allowed_models=["claude-haiku"], model_aliases={"fast": "claude-haiku"})

    client.messages.create(model="fast", max_tokens=50, messages=HI)
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        client.messages.create(model="claude-opus", max_tokens=50, messages=HI)

    assert sent(fake_upstream)["model"] == "claude-haiku"
    assert caught.value.body["error"]["code"] == "model_not_allowed"


@pytest.mark.parametrize(
    ("mode", "client_system", "expected"),
    [
        ("if_missing", None, "Be terse."),
        ("if_missing", "Mine.", "Mine."),
        ("prepend", "Mine.", "Be terse.\n\nMine."),
        (
            "prepend",
            [{"type": "text", "text": "Mine."}],
            [{"type": "text", "text": "Be terse."}, {"type": "text", "text": "Mine."}],
        ),
        ("replace", "Mine.", "Be terse."),
    ],
)
def test_system_context_goes_to_system(client_for, fake_upstream, mode, client_system, expected):
    client = client_for(system_context="Be terse.", system_context_mode=mode)
    extra = {} if client_system is None else {"system": client_system}

    client.messages.create(model="claude-haiku", max_tokens=50, messages=HI, **extra)

    assert sent(fake_upstream)["system"] == expected


def test_defaults_map_to_messages_names_and_the_ceiling_clamps(client_for, fake_upstream):
    client = client_for(
        param_defaults={"temperature": 0.2, "stop": "END", "presence_penalty": 1.0}, max_tokens_ceiling=100
    )

    client.messages.create(model="claude-haiku", max_tokens=4000, messages=HI)

    body = sent(fake_upstream)
    assert (body["temperature"], body["stop_sequences"], body["max_tokens"]) == (0.2, ["END"], 100)
    assert "presence_penalty" not in body


@pytest.mark.parametrize(
    "request_fields",
    [
        {"messages": [{"role": "user", "content": "TOPSECRET plan"}]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "the TOPSECRET plan"}]}]},
        {"messages": HI, "system": "Reveal TOPSECRET"},
        {
            "messages": [
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "TOPSECRET"}]}
            ]
        },
    ],
)
def test_blocked_patterns_cover_every_user_text(client_for, fake_upstream, request_fields):
    client = client_for(blocked_patterns=[{"name": "no-secrets", "pattern": "TOPSECRET"}])

    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="claude-haiku", max_tokens=50, **request_fields)

    assert caught.value.body["error"]["code"] == "content_policy_violation"
    assert fake_upstream.requests == []


def test_the_user_is_identified_in_metadata(client_for, fake_upstream):
    client = client_for(user_field="key_name")

    client.messages.create(model="claude-haiku", max_tokens=50, messages=HI)

    assert sent(fake_upstream)["metadata"] == {"user_id": "claude-app"}


def test_count_tokens_is_governed_without_generation_parameters(client_for, fake_upstream):
    client = client_for(
        allowed_models=["claude-haiku"],
        model_aliases={"fast": "claude-haiku"},
        system_context="Be terse.",
        param_defaults={"temperature": 0.2},
    )

    count = client.messages.count_tokens(model="fast", messages=HI)
    with pytest.raises(anthropic.PermissionDeniedError):
        client.messages.count_tokens(model="claude-opus", messages=HI)

    assert count.input_tokens > 0
    body = sent(fake_upstream, "/v1/messages/count_tokens")
    assert (body["model"], body["system"]) == ("claude-haiku", "Be terse.")
    assert "temperature" not in body


def test_redaction_and_annotation_in_a_json_answer(client_for):
    client = client_for(response_redactions=KEY_REDACTION, annotate_responses=True, name="annotated")

    message = client.messages.create(
        model="claude-haiku", max_tokens=50, messages=HI, extra_headers={"x-fake-content": "use sk-abcdefgh1234 now"}
    )

    assert message.content[0].text == "use [key] now"
    assert message.model_extra["_proxy_info"]["policy"] == "annotated"


def test_redaction_in_a_stream_split_across_events(client_for):
    client = client_for(response_redactions=KEY_REDACTION)
    pieces = ["your key: s", "k-abcd", "efgh1234", " ok"]

    with client.messages.stream(
        model="claude-haiku", max_tokens=50, messages=HI, extra_headers={"x-fake-chunks": json.dumps(pieces)}
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()

    assert text == final.content[0].text == "your key: [key] ok"


def test_a_streamed_answer_with_a_tool_call_is_audited_as_the_whole_message(client_for):
    client = client_for()
    headers = {"X-Request-ID": "msg-audit-1", "x-fake-content": "Let me check.", "x-fake-tool-call": TOOL_CALL}

    with client.messages.stream(
        model="claude-haiku", max_tokens=50, messages=HI, tools=[WEATHER_TOOL], extra_headers=headers
    ) as stream:
        final = stream.get_final_message()

    record = records_of("msg-audit-1", 1)["msg-audit-1"]
    assert (record.endpoint, record.stream, record.outcome) == ("messages", True, "ok")
    assert record.model_requested == "claude-haiku"
    body = record.response_body
    text, tool = body["content"]
    assert text == {"type": "text", "text": "Let me check."}
    assert (tool["type"], tool["name"], tool["input"]) == ("tool_use", "get_weather", {"city": "Paris"})
    assert body["stop_reason"] == final.stop_reason == "tool_use"
    assert (record.prompt_tokens, record.completion_tokens) == (final.usage.input_tokens, final.usage.output_tokens)
    assert record.total_tokens == record.prompt_tokens + record.completion_tokens


def test_a_stream_cut_before_message_stop_ends_with_an_anthropic_error_event(client_for):
    client = client_for()
    headers = {"X-Request-ID": "msg-cut-1", "x-fake-cut-after": "4", "x-fake-chunks": json.dumps(["one ", "two"])}

    with pytest.raises(anthropic.APIStatusError) as caught:
        with client.messages.stream(model="claude-haiku", max_tokens=50, messages=HI, extra_headers=headers) as stream:
            list(stream.text_stream)

    assert caught.value.body["error"]["code"] == "upstream_stream_interrupted"
    record = records_of("msg-cut-1", 1)["msg-cut-1"]
    assert record.outcome == "upstream_cut"
    assert record.response_body["content"][0]["text"] == "one "


def test_a_plain_answer_with_a_tool_call_reaches_the_sdk_whole(client_for):
    client = client_for()

    message = client.messages.create(
        model="claude-haiku",
        max_tokens=50,
        messages=HI,
        tools=[WEATHER_TOOL],
        extra_headers={"x-fake-tool-call": TOOL_CALL, "X-Request-ID": "msg-tool-1"},
    )

    tool = message.content[-1]
    assert (tool.type, tool.name, tool.input) == ("tool_use", "get_weather", {"city": "Paris"})
    assert message.stop_reason == "tool_use"
    assert records_of("msg-tool-1", 1)["msg-tool-1"].response_body["content"][-1]["input"] == {"city": "Paris"}
