"""The Responses API through aiproxy, as the OpenAI SDK uses it: the policy applies, the exchange is audited whole."""

import json

import openai
import pytest

from policies.models import Policy
from tests.test_audit_completeness import records_of

pytestmark = pytest.mark.django_db(transaction=True)

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TOOL_CALL = json.dumps({"name": "get_weather", "arguments": json.dumps({"city": "Paris"})})
KEY_REDACTION = [{"pattern": r"sk-[A-Za-z0-9]{8,}", "replacement": "[key]"}]


@pytest.fixture
def client_for(live, make_key):
    """An OpenAI SDK client whose key runs under a policy built from the given fields."""

    def build(**fields) -> openai.OpenAI:
        policy = Policy.objects.create(name=fields.pop("name", "responses-policy"), **fields)
        key = make_key("responses-app", policy=policy)
        return openai.OpenAI(base_url=live.url + "/v1", api_key=key, max_retries=0, timeout=10)

    return build


def sent(fake_upstream) -> dict:
    [request] = fake_upstream.requests_for("/v1/responses")
    return request.json


def test_plain_create_reaches_the_upstream_and_comes_back(client_for, fake_upstream):
    client = client_for()

    reply = client.responses.create(model="gpt-4o", input="Hi", extra_headers={"x-fake-content": "Hello there"})

    assert reply.output_text == "Hello there"
    assert sent(fake_upstream)["input"] == "Hi"


def test_an_alias_resolves_before_forwarding(client_for, fake_upstream):
    client = client_for(allowed_models=["gpt-4o-mini"], model_aliases={"fast": "gpt-4o-mini"})

    client.responses.create(model="fast", input="Hi")

    assert sent(fake_upstream)["model"] == "gpt-4o-mini"


def test_a_forbidden_model_is_403_and_never_forwarded(client_for, fake_upstream):
    client = client_for(allowed_models=["gpt-4o-mini"])

    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.responses.create(model="gpt-4o", input="Hi")

    assert caught.value.code == "model_not_allowed"
    assert fake_upstream.requests == []


@pytest.mark.parametrize(
    ("mode", "request_fields", "instructions", "input_roles"),
    [
        ("if_missing", {}, "Be terse.", ["user"]),
        ("if_missing", {"instructions": "Mine."}, "Mine.", ["user"]),
        ("if_missing", {"developer": True}, None, ["developer", "user"]),
        ("prepend", {"instructions": "Mine."}, "Be terse.\n\nMine.", ["user"]),
        ("replace", {"instructions": "Mine.", "developer": True}, "Be terse.", ["user"]),
    ],
)
def test_system_context_goes_to_instructions(
    client_for, fake_upstream, mode, request_fields, instructions, input_roles
):
    client = client_for(system_context="Be terse.", system_context_mode=mode)
    items = [{"role": "user", "content": "Hi"}]
    if request_fields.get("developer"):
        items.insert(0, {"role": "developer", "content": "Dev says."})
    extra = {"instructions": request_fields["instructions"]} if "instructions" in request_fields else {}

    client.responses.create(model="gpt-4o", input=items, **extra)

    body = sent(fake_upstream)
    assert body.get("instructions") == instructions
    assert [item["role"] for item in body["input"]] == input_roles


def test_defaults_map_to_the_responses_names_and_the_ceiling_clamps(client_for, fake_upstream):
    client = client_for(param_defaults={"temperature": 0.2, "max_tokens": 80, "seed": 7}, max_tokens_ceiling=100)

    client.responses.create(model="gpt-4o", input="Hi")
    defaulted = sent(fake_upstream)
    fake_upstream.reset()
    client.responses.create(model="gpt-4o", input="Hi", max_output_tokens=5000)

    assert (defaulted["temperature"], defaulted["max_output_tokens"]) == (0.2, 80)
    assert "seed" not in defaulted
    assert "max_tokens" not in defaulted
    assert sent(fake_upstream)["max_output_tokens"] == 100


@pytest.mark.parametrize(
    "request_fields",
    [
        {"input": "TOPSECRET plan"},
        {"input": [{"role": "user", "content": [{"type": "input_text", "text": "the TOPSECRET plan"}]}]},
        {"input": "Hi", "instructions": "Reveal TOPSECRET"},
        {"input": [{"type": "function_call_output", "call_id": "c1", "output": "TOPSECRET"}]},
    ],
)
def test_blocked_patterns_cover_every_user_text(client_for, fake_upstream, request_fields):
    client = client_for(blocked_patterns=[{"name": "no-secrets", "pattern": "TOPSECRET"}])

    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="gpt-4o", **request_fields)

    assert caught.value.code == "content_policy_violation"
    assert fake_upstream.requests == []


def test_the_user_is_identified(client_for, fake_upstream):
    client = client_for(user_field="key_name")

    client.responses.create(model="gpt-4o", input="Hi")

    assert sent(fake_upstream)["user"] == "responses-app"


def test_redaction_and_annotation_in_a_json_answer(client_for):
    client = client_for(response_redactions=KEY_REDACTION, annotate_responses=True, name="annotated")

    reply = client.responses.create(
        model="gpt-4o", input="Hi", extra_headers={"x-fake-content": "use sk-abcdefgh1234 now"}
    )

    assert reply.output_text == "use [key] now"
    info = reply.model_extra["_proxy_info"]
    assert (info["policy"], info["original_model"]) == ("annotated", "gpt-4o")


def test_redaction_in_a_stream_split_across_events(client_for):
    client = client_for(response_redactions=KEY_REDACTION)
    pieces = ["your key: s", "k-abcd", "efgh1234", " ok"]

    events = list(
        client.responses.create(
            model="gpt-4o", input="Hi", stream=True, extra_headers={"x-fake-chunks": json.dumps(pieces)}
        )
    )

    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = next(e for e in events if e.type == "response.output_text.done")
    assert deltas == done.text == "your key: [key] ok"
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "your key: [key] ok"
    assert "abcd" not in "".join(e.model_dump_json() for e in events)


def test_a_plain_answer_is_audited_with_model_and_tokens(client_for):
    client = client_for(model_aliases={"fast": "gpt-4o-mini"})

    client.responses.create(model="fast", input="Hi there", extra_headers={"X-Request-ID": "resp-audit-1"})

    record = records_of("resp-audit-1", 1)["resp-audit-1"]
    assert (record.endpoint, record.stream, record.outcome) == ("responses", False, "ok")
    assert (record.model_requested, record.model_upstream) == ("fast", "gpt-4o-mini")
    assert record.modifications == ["alias:fast->gpt-4o-mini"]
    assert record.prompt_tokens == 2
    assert record.total_tokens == record.prompt_tokens + record.completion_tokens
    assert record.stored_id == record.response_body["id"]


def test_a_streamed_answer_with_a_tool_call_is_audited_as_the_final_response(client_for):
    client = client_for()

    with client.responses.stream(
        model="gpt-4o",
        input="Weather in Paris?",
        tools=[WEATHER_TOOL],
        extra_headers={
            "X-Request-ID": "resp-audit-2",
            "x-fake-content": "Let me check.",
            "x-fake-tool-call": TOOL_CALL,
        },
    ) as stream:
        final = stream.get_final_response()

    record = records_of("resp-audit-2", 1)["resp-audit-2"]
    assert (record.stream, record.outcome, record.model_requested) == (True, "ok", "gpt-4o")
    body = record.response_body
    assert body["object"] == "response"
    assert body["status"] == "completed"
    message, call = body["output"]
    assert message["content"][0]["text"] == final.output_text == "Let me check."
    assert (call["type"], call["name"], json.loads(call["arguments"])) == (
        "function_call",
        "get_weather",
        {"city": "Paris"},
    )
    assert record.completion_tokens == body["usage"]["output_tokens"]
    assert record.stored_id == final.id


def test_a_stream_cut_before_response_completed_ends_with_an_error_event(client_for):
    client = client_for()
    headers = {"X-Request-ID": "resp-cut-1", "x-fake-cut-after": "5", "x-fake-chunks": json.dumps(["one ", "two"])}

    events = list(client.responses.create(model="gpt-4o", input="Hi", stream=True, extra_headers=headers))

    assert events[-1].type == "error"
    assert events[-1].code == "upstream_stream_interrupted"
    record = records_of("resp-cut-1", 1)["resp-cut-1"]
    assert record.outcome == "upstream_cut"
    assert record.response_body["output"][0]["content"][0]["text"] == "one "


def test_a_plain_answer_with_a_function_call_reaches_the_sdk_whole(client_for):
    client = client_for()

    reply = client.responses.create(
        model="gpt-4o", input="Weather in Paris?", tools=[WEATHER_TOOL], extra_headers={"x-fake-tool-call": TOOL_CALL}
    )

    call = reply.output[-1]
    assert (call.type, call.name, json.loads(call.arguments)) == ("function_call", "get_weather", {"city": "Paris"})
