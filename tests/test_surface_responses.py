"""The Responses API surface over plain dicts: what each policy setting does to /v1/responses requests,
answers and streams (OpenAI's `instructions`/`input` in, `output` items and named events out)."""

import copy
import json

import pytest

from policies import engine, surfaces
from policies.engine import (
    RESPONSES,
    PolicyRejection,
    RequestContext,
    ResponseContext,
    apply_request,
    apply_response,
)
from policies.spec import PASS_THROUGH, PolicySpec
from policies.streams import StreamRewriter, stream_needs_rewrite
from policies.surfaces.responses import ResponsesAssembler

ALICE = RequestContext(key_name="alice-laptop", client_ip="203.0.113.7")


def make_spec(**content) -> PolicySpec:
    return PolicySpec.from_content(name="team-a", version=3, content=content, id=7)


def plan(content: dict, body: dict, context: RequestContext = ALICE) -> engine.RequestPlan:
    """apply_request on the Responses surface, checking on every call that the client's body is left untouched."""
    before = copy.deepcopy(body)
    result = apply_request(make_spec(**content), RESPONSES, body, context)
    assert body == before
    return result


def create(**fields) -> dict:
    """A POST /v1/responses body."""
    return {"model": "gpt-4o", "input": "Hi", **fields}


def message(role: str, content) -> dict:
    return {"type": "message", "role": role, "content": content}


def test_the_surface_is_registered_under_its_endpoint_name():
    assert RESPONSES == "responses"
    assert surfaces.surface_for("responses") is surfaces.RESPONSES
    assert surfaces.RESPONSES.group == "responses"


def test_a_policy_with_everything_off_changes_nothing():
    body = create(instructions="Be long.", temperature=0.5, max_output_tokens=10, user="bob")
    result = apply_request(PASS_THROUGH, RESPONSES, body, ALICE)
    assert result.body == body
    assert result.body is not body
    assert result.modifications == []
    assert (result.original_model, result.upstream_model) == ("gpt-4o", "gpt-4o")


# --- models -----------------------------------------------------------------------------------

ALLOW = {"allowed_models": ["gpt-4o", "o3*"], "model_aliases": {"fast": "gpt-4o-mini"}}


@pytest.mark.parametrize(
    ("model", "upstream", "modifications"),
    [
        pytest.param("gpt-4o", "gpt-4o", [], id="allowed"),
        pytest.param("o3-mini", "o3-mini", [], id="allowed-by-glob"),
        pytest.param("fast", "gpt-4o-mini", ["alias:fast->gpt-4o-mini"], id="alias-resolved"),
    ],
)
def test_allowed_models_and_aliases(model, upstream, modifications):
    result = plan(ALLOW, create(model=model))
    assert result.body == create(model=upstream)
    assert result.modifications == modifications
    assert (result.original_model, result.upstream_model) == (model, upstream)


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-3.5-turbo", "gpt-4o,o3"])
def test_models_outside_the_policy_are_refused(model):
    with pytest.raises(PolicyRejection) as caught:
        plan(ALLOW, create(model=model))
    rejection = caught.value
    assert (rejection.status, rejection.code, rejection.param) == (403, "model_not_allowed", "model")
    assert rejection.message == f'The model "{model}" is not allowed for this API key.'


# --- system context: `instructions` -----------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "client", "expected", "modified"),
    [
        pytest.param(
            "if_missing",
            {"input": "Hi"},
            {"input": "Hi", "instructions": "Be brief."},
            True,
            id="if_missing-adds-when-none",
        ),
        pytest.param(
            "if_missing",
            {"input": "Hi", "instructions": "Be long."},
            {"input": "Hi", "instructions": "Be long."},
            False,
            id="if_missing-keeps-the-clients-instructions",
        ),
        pytest.param(
            "if_missing",
            {"input": "Hi", "instructions": "  \n"},
            {"input": "Hi", "instructions": "Be brief."},
            True,
            id="if_missing-blank-instructions-are-missing",
        ),
        pytest.param(
            "if_missing",
            {"input": [message("system", "Be long."), message("user", "Hi")]},
            {"input": [message("system", "Be long."), message("user", "Hi")]},
            False,
            id="if_missing-system-item-counts",
        ),
        pytest.param(
            "if_missing",
            {"input": [{"role": "system", "content": "Be long."}, {"role": "user", "content": "Hi"}]},
            {"input": [{"role": "system", "content": "Be long."}, {"role": "user", "content": "Hi"}]},
            False,
            id="if_missing-untyped-system-item-counts",
        ),
        pytest.param(
            "if_missing",
            {"input": [message("developer", [{"type": "input_text", "text": "Be long."}]), message("user", "Hi")]},
            {"input": [message("developer", [{"type": "input_text", "text": "Be long."}]), message("user", "Hi")]},
            False,
            id="if_missing-developer-item-counts",
        ),
        pytest.param(
            "prepend",
            {"input": "Hi", "instructions": "Be long."},
            {"input": "Hi", "instructions": "Be brief.\n\nBe long."},
            True,
            id="prepend-before-the-clients",
        ),
        pytest.param(
            "prepend",
            {"input": "Hi"},
            {"input": "Hi", "instructions": "Be brief."},
            True,
            id="prepend-alone",
        ),
        pytest.param(
            "replace",
            {
                "instructions": "Be long.",
                "input": [
                    message("user", "Hi"),
                    message("system", "Be long."),
                    message("assistant", [{"type": "output_text", "text": "Yo"}]),
                    message("developer", "Use French."),
                ],
            },
            {
                "instructions": "Be brief.",
                "input": [message("user", "Hi"), message("assistant", [{"type": "output_text", "text": "Yo"}])],
            },
            True,
            id="replace-drops-the-clients-instructions-and-system-items",
        ),
        pytest.param(
            "replace",
            {"input": "Hi", "instructions": "Be long."},
            {"input": "Hi", "instructions": "Be brief."},
            True,
            id="replace-string-input",
        ),
    ],
)
def test_system_context_goes_to_instructions(mode, client, expected, modified):
    result = plan({"system_context": "Be brief.", "system_context_mode": mode}, {"model": "gpt-4o", **client})
    assert result.body == {"model": "gpt-4o", **expected}
    assert result.modifications == ([f"system_context:{mode}"] if modified else [])


# --- parameters ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "client", "expected", "modifications"),
    [
        pytest.param(
            {"param_defaults": {"max_tokens": 256}},
            {},
            {"max_output_tokens": 256},
            ["default:max_output_tokens"],
            id="max_tokens-is-max_output_tokens",
        ),
        pytest.param(
            {"param_defaults": {"max_completion_tokens": 256}},
            {},
            {"max_output_tokens": 256},
            ["default:max_output_tokens"],
            id="max_completion_tokens-is-max_output_tokens",
        ),
        pytest.param(
            {"param_defaults": {"max_tokens": 256}},
            {"max_output_tokens": 50},
            {"max_output_tokens": 50},
            [],
            id="client-value-wins-over-a-default",
        ),
        pytest.param(
            {"param_overrides": {"max_completion_tokens": 100}},
            {"max_output_tokens": 500},
            {"max_output_tokens": 100},
            ["override:max_output_tokens"],
            id="override-renamed",
        ),
        pytest.param(
            {"model_rules": [{"pattern": "gpt-4o*", "defaults": {"max_tokens": 64, "temperature": 0.2}}]},
            {},
            {"max_output_tokens": 64, "temperature": 0.2},
            ["model_rule:gpt-4o*:max_output_tokens", "model_rule:gpt-4o*:temperature"],
            id="model-rule-renamed",
        ),
        pytest.param(
            {
                "param_defaults": {
                    "seed": 1,
                    "stop": ["###"],
                    "n": 2,
                    "presence_penalty": 0.5,
                    "frequency_penalty": 0.1,
                    "logit_bias": {"50256": -100},
                    "temperature": 0.3,
                },
                "param_overrides": {"seed": 7, "top_p": 0.9},
            },
            {},
            {"temperature": 0.3, "top_p": 0.9},
            ["default:temperature", "override:top_p"],
            id="chat-only-params-are-not-sent",
        ),
        pytest.param(
            {"model_rules": [{"pattern": "gpt-4o*", "defaults": {"seed": 1, "n": 3}}]},
            {},
            {},
            [],
            id="chat-only-params-in-model-rules-are-not-sent",
        ),
    ],
)
def test_params_in_responses_terms(content, client, expected, modifications):
    result = plan(content, create(**client))
    assert result.body == create(**expected)
    assert result.modifications == modifications


@pytest.mark.parametrize(
    ("content", "client", "expected", "modifications"),
    [
        pytest.param({}, {"max_output_tokens": 4096}, 2048, ["ceiling:max_output_tokens:4096->2048"], id="clamped"),
        pytest.param({}, {"max_output_tokens": 100}, 100, [], id="under"),
        pytest.param({}, {"max_output_tokens": 2048}, 2048, [], id="at"),
        pytest.param({}, {}, None, [], id="absent-is-not-added"),
        pytest.param(
            {"param_overrides": {"max_tokens": 8000}},
            {},
            2048,
            ["override:max_output_tokens", "ceiling:max_output_tokens:8000->2048"],
            id="clamps-an-override-too",
        ),
    ],
)
def test_max_tokens_ceiling_clamps_max_output_tokens(content, client, expected, modifications):
    result = plan({**content, "max_tokens_ceiling": 2048}, create(**client))
    assert result.body.get("max_output_tokens") == expected
    assert "max_tokens" not in result.body
    assert result.modifications == modifications


# --- blocked patterns ---------------------------------------------------------------------------

NO_SSN = {
    "blocked_patterns": [{"name": "other", "pattern": "zzz"}, {"name": "no-ssn", "pattern": r"\b\d{3}-\d{2}-\d{4}\b"}]
}
SSN = "my number is 123-45-6789"


@pytest.mark.parametrize(
    ("client", "param"),
    [
        pytest.param({"instructions": SSN}, "instructions", id="instructions"),
        pytest.param({"input": SSN}, "input", id="input-string"),
        pytest.param({"input": [message("user", SSN)]}, "input", id="message-string-content"),
        pytest.param(
            {"input": [{"role": "user", "content": SSN}]},
            "input",
            id="easy-input-message-without-type",
        ),
        pytest.param(
            {
                "input": [
                    message(
                        "user",
                        [
                            {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "auto"},
                            {"type": "input_text", "text": SSN},
                        ],
                    )
                ]
            },
            "input",
            id="input_text-part",
        ),
        pytest.param({"input": [message("system", SSN), message("user", "Hi")]}, "input", id="system-item"),
        pytest.param({"input": [message("developer", SSN), message("user", "Hi")]}, "input", id="developer-item"),
        pytest.param(
            {
                "input": [
                    message("user", "Look it up"),
                    {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": "{}"},
                    {"type": "function_call_output", "call_id": "call_1", "output": SSN},
                ]
            },
            "input",
            id="function_call_output",
        ),
        pytest.param(
            {
                "input": [
                    {
                        "type": "function_call_output",
                        "call_id": "call_1",
                        "output": [{"type": "input_text", "text": SSN}],
                    }
                ]
            },
            "input",
            id="function_call_output-parts",
        ),
    ],
)
def test_blocked_patterns_search_instructions_and_input(client, param):
    with pytest.raises(PolicyRejection) as caught:
        plan(NO_SSN, create(**client))
    rejection = caught.value
    assert (rejection.status, rejection.code, rejection.param) == (400, "content_policy_violation", param)
    assert rejection.message == 'The request was blocked by the content policy rule "no-ssn".'
    assert "123-45" not in rejection.message


@pytest.mark.parametrize(
    "client",
    [
        pytest.param({"input": "call 555-1234", "instructions": "id 1234-56-7890"}, id="near-misses"),
        pytest.param(
            {"input": [message("user", [{"type": "input_image", "image_url": "https://x/123-45-6789.png"}])]},
            id="image-urls-are-not-text",
        ),
    ],
)
def test_blocked_patterns_pass_clean_text(client):
    result = plan(NO_SSN, create(**client))
    assert result.body == create(**client)
    assert result.modifications == []


def test_blocked_patterns_check_the_clients_text_not_the_policys_instructions():
    content = {**NO_SSN, "system_context": "Never say 123-45-6789."}
    result = plan(content, create())
    assert result.body["instructions"] == "Never say 123-45-6789."
    assert result.modifications == ["system_context:if_missing"]


# --- the user field -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "override", "client", "expected", "modifications"),
    [
        pytest.param("leave", False, {}, {}, [], id="leave"),
        pytest.param("key_name", False, {}, {"user": "alice-laptop"}, ["user:key_name"], id="key_name"),
        pytest.param("client_ip", False, {}, {"user": "203.0.113.7"}, ["user:client_ip"], id="client_ip"),
        pytest.param("key_name", False, {"user": "bob"}, {"user": "bob"}, [], id="clients-user-kept"),
        pytest.param(
            "key_name",
            False,
            {"safety_identifier": "hash-1"},
            {"safety_identifier": "hash-1"},
            [],
            id="clients-safety_identifier-kept",
        ),
        pytest.param(
            "key_name", True, {"user": "bob"}, {"user": "alice-laptop"}, ["user:key_name"], id="override-user"
        ),
        pytest.param(
            "key_name",
            True,
            {"safety_identifier": "hash-1"},
            {"user": "alice-laptop", "safety_identifier": "alice-laptop"},
            ["user:key_name"],
            id="override-safety_identifier",
        ),
        pytest.param("key_name", True, {"user": "alice-laptop"}, {"user": "alice-laptop"}, [], id="override-same"),
    ],
)
def test_user_field(mode, override, client, expected, modifications):
    result = plan({"user_field": mode, "user_field_override": override}, create(**client))
    assert result.body == create(**expected)
    assert result.modifications == modifications


# --- stored objects -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            create(previous_response_id="resp_abc123"),
            [("previous_response_id", "resp_abc123")],
            id="previous_response_id",
        ),
        pytest.param(create(), [], id="none"),
        pytest.param(create(previous_response_id=""), [], id="empty"),
        pytest.param(create(previous_response_id=None), [], id="null"),
        pytest.param(create(previous_response_id=["resp_1"]), [], id="not-a-string"),
        pytest.param(["not", "a", "dict"], [], id="not-a-dict"),
    ],
)
def test_referenced_objects(body, expected):
    assert list(surfaces.RESPONSES.referenced_objects(body)) == expected


def test_stored_id_is_the_response_id():
    assert surfaces.RESPONSES.stored_id({"id": "resp_1", "object": "response"}) == "resp_1"
    assert surfaces.RESPONSES.stored_id({"id": ""}) is None
    assert surfaces.RESPONSES.stored_id({"error": {"message": "x"}}) is None


# --- JSON answers ---------------------------------------------------------------------------------

SECRETS = {
    "response_redactions": [
        {"pattern": r"sk-[A-Za-z0-9]{8,}", "replacement": "[key]"},
        {"pattern": r"(?i)password: *\S+"},  # default replacement
    ]
}
NO_ANNOTATION = ResponseContext(original_model="gpt-4o", modifications=(), processing_ms=1.5)

FUNCTION_CALL = {
    "type": "function_call",
    "id": "fc_1",
    "call_id": "call_1",
    "name": "lookup",
    "arguments": '{"key": "sk-abcdefgh1234"}',
    "status": "completed",
}


def response_object(*texts: str, output_text: str | None = None, extra_output: tuple = ()) -> dict:
    """A completed Response with one assistant message holding an output_text part per text."""
    body = {
        "id": "resp_1",
        "object": "response",
        "created_at": 1700000000,
        "status": "completed",
        "model": "gpt-4o-2024-08-06",
        "output": [
            *extra_output,
            {
                "type": "message",
                "id": "msg_1",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []} for text in texts],
            },
        ],
        "usage": {"input_tokens": 12, "output_tokens": 7, "total_tokens": 19},
    }
    if output_text is not None:
        body["output_text"] = output_text
    return body


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            response_object("use sk-abcdefgh1234 ok"),
            response_object("use [key] ok"),
            id="output_text-part",
        ),
        pytest.param(
            response_object("Password: hunter2", "fine", "key sk-ABCDEFGH99"),
            response_object("[redacted]", "fine", "key [key]"),
            id="several-parts",
        ),
        pytest.param(
            response_object("use sk-abcdefgh1234 ok", output_text="use sk-abcdefgh1234 ok"),
            response_object("use [key] ok", output_text="use [key] ok"),
            id="top-level-output_text",
        ),
        pytest.param(
            response_object("use sk-abcdefgh1234", extra_output=(FUNCTION_CALL,)),
            response_object("use [key]", extra_output=(FUNCTION_CALL,)),
            id="function_call-untouched",
        ),
        pytest.param(
            {
                **response_object(),
                "output": [
                    {
                        "type": "message",
                        "id": "msg_1",
                        "status": "completed",
                        "role": "assistant",
                        "content": [
                            {"type": "refusal", "refusal": "no"},
                            {"type": "output_text", "text": "sk-abcdefgh1234", "annotations": []},
                        ],
                    }
                ],
            },
            {
                **response_object(),
                "output": [
                    {
                        "type": "message",
                        "id": "msg_1",
                        "status": "completed",
                        "role": "assistant",
                        "content": [
                            {"type": "refusal", "refusal": "no"},
                            {"type": "output_text", "text": "[key]", "annotations": []},
                        ],
                    }
                ],
            },
            id="only-output_text-parts",
        ),
    ],
)
def test_response_redactions(body, expected):
    before = copy.deepcopy(body)
    result = apply_response(make_spec(**SECRETS), RESPONSES, body, NO_ANNOTATION)
    assert result == expected
    assert body == before


def test_function_call_items_are_the_same_objects_after_redaction():
    body = response_object("use sk-abcdefgh1234", extra_output=(FUNCTION_CALL,))
    result = apply_response(make_spec(**SECRETS), RESPONSES, body, NO_ANNOTATION)
    assert result["output"][0] is body["output"][0]
    assert result["output"][0]["arguments"] == '{"key": "sk-abcdefgh1234"}'


def test_an_answer_with_nothing_to_redact_is_returned_as_is():
    body = response_object("nothing secret", output_text="nothing secret", extra_output=(FUNCTION_CALL,))
    assert apply_response(make_spec(**SECRETS), RESPONSES, body, NO_ANNOTATION) is body
    assert apply_response(PASS_THROUGH, RESPONSES, body, NO_ANNOTATION) is body


def test_annotations_add_proxy_info():
    spec = make_spec(annotate_responses=True, annotation_extra={"team": "search"}, **SECRETS)
    context = ResponseContext(original_model="fast", modifications=("alias:fast->gpt-4o-mini",), processing_ms=12.5)
    body = response_object("use sk-abcdefgh1234")
    before = copy.deepcopy(body)
    result = apply_response(spec, RESPONSES, body, context)
    assert body == before
    assert result == {
        **response_object("use [key]"),
        "usage": {"input_tokens": 12, "output_tokens": 7, "total_tokens": 19, "aiproxy_processing_ms": 12.5},
        "_proxy_info": {
            "team": "search",
            "policy": "team-a",
            "policy_version": 3,
            "original_model": "fast",
            "modifications": ["alias:fast->gpt-4o-mini"],
            "processing_ms": 12.5,
        },
    }


# --- streams ------------------------------------------------------------------------------------

KEY_REDACTION = make_spec(response_redactions=[{"pattern": r"sk-[A-Za-z0-9]{8,}", "replacement": "[key]"}])
IN_PROGRESS = {
    "id": "resp_1",
    "object": "response",
    "created_at": 1700000000,
    "status": "in_progress",
    "model": "gpt-4o-2024-08-06",
    "output": [],
    "usage": None,
}


def created(seq: int = 0) -> dict:
    return {"type": "response.created", "sequence_number": seq, "response": dict(IN_PROGRESS)}


def item_added(seq: int, output_index: int = 0, item_id: str = "msg_1") -> dict:
    item = {"type": "message", "id": item_id, "status": "in_progress", "role": "assistant", "content": []}
    return {"type": "response.output_item.added", "sequence_number": seq, "output_index": output_index, "item": item}


def part_event(kind: str, seq: int, output_index: int, content_index: int, item_id: str, **fields) -> dict:
    """An event about one content part of one output item, as every text event of the API is."""
    where = {"item_id": item_id, "output_index": output_index, "content_index": content_index}
    return {"type": kind, "sequence_number": seq, **where, **fields}


def part_added(seq: int, output_index: int = 0, content_index: int = 0, item_id: str = "msg_1") -> dict:
    part = {"type": "output_text", "text": "", "annotations": []}
    return part_event("response.content_part.added", seq, output_index, content_index, item_id, part=part)


def delta(text: str, seq: int, output_index: int = 0, content_index: int = 0, item_id: str = "msg_1") -> dict:
    return part_event("response.output_text.delta", seq, output_index, content_index, item_id, delta=text, logprobs=[])


def text_done(text: str, seq: int, output_index: int = 0, content_index: int = 0, item_id: str = "msg_1") -> dict:
    return part_event("response.output_text.done", seq, output_index, content_index, item_id, text=text, logprobs=[])


def part_done(text: str, seq: int, output_index: int = 0, content_index: int = 0, item_id: str = "msg_1") -> dict:
    part = {"type": "output_text", "text": text, "annotations": []}
    return part_event("response.content_part.done", seq, output_index, content_index, item_id, part=part)


def message_item(*texts: str, item_id: str = "msg_1") -> dict:
    return {
        "type": "message",
        "id": item_id,
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []} for text in texts],
    }


def item_done(item: dict, seq: int, output_index: int = 0) -> dict:
    return {"type": "response.output_item.done", "sequence_number": seq, "output_index": output_index, "item": item}


def completed(output: list, seq: int, kind: str = "response.completed") -> dict:
    status = {"response.completed": "completed", "response.incomplete": "incomplete", "response.failed": "failed"}
    response = {
        **IN_PROGRESS,
        "status": status[kind],
        "output": output,
        "usage": {"input_tokens": 12, "output_tokens": 9, "total_tokens": 21},
    }
    return {"type": kind, "sequence_number": seq, "response": response}


def text_stream(*pieces: str, kind: str = "response.completed") -> list[dict]:
    """A whole stream answering one message whose only part's text arrives in these deltas."""
    text = "".join(pieces)
    deltas = [delta(piece, 3 + i) for i, piece in enumerate(pieces)]
    seq = 3 + len(pieces)
    return [
        created(0),
        item_added(1),
        part_added(2),
        *deltas,
        text_done(text, seq),
        part_done(text, seq + 1),
        item_done(message_item(text), seq + 2),
        completed([message_item(text)], seq + 3, kind),
    ]


def run_stream(spec: PolicySpec, events: list[dict]) -> tuple[list[dict], list[dict]]:
    """All rewritten events and flush()'s events, checking the input events are never mutated."""
    rewriter = StreamRewriter(spec, RESPONSES)
    before = copy.deepcopy(events)
    out = [sent for event in events for sent in rewriter.on_event(event)]
    assert events == before
    return out, rewriter.flush()


def deltas_of(events: list[dict]) -> list[str]:
    return [e["delta"] for e in events if e["type"] == "response.output_text.delta"]


def test_stream_redaction_split_across_two_deltas():
    events = text_stream("key sk-abc", "defgh12 ok")
    out, flushed = run_stream(KEY_REDACTION, events)
    assert deltas_of(out) == ["key ", "[key] ok"]
    assert out[3] == {**events[3], "delta": "key "}
    assert out[4] == {**events[4], "delta": "[key] ok"}
    assert out[5] == text_done("key [key] ok", 5)
    assert out[6] == part_done("key [key] ok", 6)
    assert out[7] == item_done(message_item("key [key] ok"), 7)
    assert out[8] == completed([message_item("key [key] ok")], 8)
    assert len(out) == len(events)
    assert flushed == []


def test_held_text_is_released_just_before_output_text_done():
    events = text_stream("key sk-abc", "defgh12 ok, sk-", "xyz98765")
    out, flushed = run_stream(KEY_REDACTION, events)
    assert [e["type"] for e in out] == [
        "response.created",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",  # the held text, released
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert deltas_of(out) == ["key ", "[key] ok, ", "", "[key]"]
    # The released delta takes the sequence number of the .done event it precedes.
    assert out[6] == delta("[key]", 6)
    final = "key [key] ok, [key]"
    assert out[7] == text_done(final, 6)
    assert out[8:] == [part_done(final, 7), item_done(message_item(final), 8), completed([message_item(final)], 9)]
    assert flushed == []


@pytest.mark.parametrize("kind", ["response.incomplete", "response.failed"])
def test_every_terminal_event_carries_the_redacted_output(kind):
    out, _ = run_stream(KEY_REDACTION, text_stream("sk-abcdefgh12", " ok", kind=kind))
    assert out[-1] == completed([message_item("[key] ok")], 8, kind)


def test_events_of_other_types_pass_through_as_the_same_object():
    call = {**FUNCTION_CALL, "arguments": ""}
    others = [
        created(0),
        {"type": "response.in_progress", "sequence_number": 1, "response": dict(IN_PROGRESS)},
        item_added(2),
        part_added(3),
        {
            "type": "response.output_item.added",
            "sequence_number": 4,
            "output_index": 1,
            "item": {**call, "status": "in_progress"},
        },
        {
            "type": "response.function_call_arguments.delta",
            "sequence_number": 5,
            "item_id": "fc_1",
            "output_index": 1,
            "delta": '{"key": "sk-abcdefgh1234"}',
        },
        {
            "type": "response.function_call_arguments.done",
            "sequence_number": 6,
            "item_id": "fc_1",
            "output_index": 1,
            "arguments": '{"key": "sk-abcdefgh1234"}',
        },
        item_done(FUNCTION_CALL, 7, output_index=1),
        {
            "type": "response.reasoning_summary_text.delta",
            "sequence_number": 8,
            "item_id": "rs_1",
            "output_index": 2,
            "summary_index": 0,
            "delta": "thinking",
        },
        {"type": "error", "sequence_number": 9, "code": "server_error", "message": "boom", "param": None},
        {
            "type": "response.refusal.delta",
            "sequence_number": 9,
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 1,
            "delta": "I can't",
        },
        {
            "type": "response.output_text.annotation.added",
            "sequence_number": 9,
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "annotation_index": 0,
            "annotation": {"type": "url_citation", "url": "https://example.com", "title": "x"},
        },
        delta("nothing secret", 10),
        text_done("nothing secret", 11),
        part_done("nothing secret", 12),
        item_done(message_item("nothing secret"), 13),
        completed([message_item("nothing secret"), FUNCTION_CALL], 14),
    ]
    rewriter = StreamRewriter(KEY_REDACTION, RESPONSES)
    for event in others:
        [sent] = rewriter.on_event(event)
        assert sent is event, event["type"]
    assert rewriter.flush() == []


def test_each_content_part_has_its_own_buffer():
    events = [
        delta("a sk-abc", 0, output_index=0, content_index=0),
        delta("b sk-xyz", 1, output_index=1, content_index=0, item_id="msg_2"),
        delta("defgh12 c", 2, output_index=0, content_index=0),
        text_done("a sk-abcdefgh12 c", 3, output_index=0, content_index=0),
        delta("98765432 d", 4, output_index=1, content_index=0, item_id="msg_2"),
        text_done("b sk-xyz98765432 d", 5, output_index=1, content_index=0, item_id="msg_2"),
    ]
    out, flushed = run_stream(KEY_REDACTION, events)
    assert deltas_of(out) == ["a ", "b ", "[key] c", "[key] d"]
    assert [e.get("text") for e in out if e["type"] == "response.output_text.done"] == ["a [key] c", "b [key] d"]
    assert flushed == []


def test_flush_releases_text_held_when_the_stream_is_cut():
    events = [created(0), item_added(1), part_added(2), delta("ids sk-abcdefgh12", 3)]
    out, flushed = run_stream(KEY_REDACTION, events)
    assert deltas_of(out) == ["ids "]
    assert flushed == [delta("[key]", 3)]


def test_stream_without_redactions_is_not_rewritten():
    spec = make_spec(annotate_responses=True)
    assert stream_needs_rewrite(spec, RESPONSES) is False
    assert stream_needs_rewrite(KEY_REDACTION, RESPONSES) is True
    rewriter = StreamRewriter(spec, RESPONSES)
    event = delta("sk-abcdefgh1234", 3)
    assert rewriter.on_event(event)[0] is event
    assert rewriter.flush() == []


# --- the assembler (the audit record of a stream) -------------------------------------------------


def assemble(events: list[dict]) -> ResponsesAssembler:
    assembler = surfaces.RESPONSES.assembler()
    for event in events:
        assembler.add(event)
    return assembler


def tool_call_stream() -> list[dict]:
    """A message, then a function call whose arguments arrive in pieces; no response.completed."""
    return [
        created(0),
        {"type": "response.in_progress", "sequence_number": 1, "response": dict(IN_PROGRESS)},
        item_added(2),
        part_added(3),
        delta("Let me ", 4),
        delta("Second part", 5, content_index=1),
        delta("check.", 5),
        {
            "type": "response.output_item.added",
            "sequence_number": 6,
            "output_index": 1,
            "item": {**FUNCTION_CALL, "arguments": "", "status": "in_progress"},
        },
        {
            "type": "response.function_call_arguments.delta",
            "sequence_number": 7,
            "item_id": "fc_1",
            "output_index": 1,
            "delta": '{"key": ',
        },
        {
            "type": "response.function_call_arguments.delta",
            "sequence_number": 8,
            "item_id": "fc_1",
            "output_index": 1,
            "delta": '"sk-abcdefgh1234"}',
        },
    ]


def test_assembler_takes_the_response_of_a_complete_stream():
    events = text_stream("Hello", " there")
    assembler = assemble(events)
    assert assembler.result() == completed([message_item("Hello there")], 8)["response"]
    assert assembler.object_id == "resp_1"


def test_assembler_rebuilds_a_stream_cut_before_response_completed():
    assembler = assemble(tool_call_stream())
    assert assembler.result() == {
        **IN_PROGRESS,
        "output": [
            {
                "type": "message",
                "id": "msg_1",
                "status": "in_progress",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": "Let me check.", "annotations": []},
                    {"type": "output_text", "text": "Second part", "annotations": []},
                ],
            },
            {**FUNCTION_CALL, "arguments": '{"key": "sk-abcdefgh1234"}', "status": "in_progress"},
        ],
    }
    assert assembler.object_id == "resp_1"


def test_assembler_keeps_an_item_its_done_event_carried_whole():
    events = text_stream("Hello", " there")[:-1]  # cut just before response.completed
    assert assemble(events).result() == {**IN_PROGRESS, "output": [message_item("Hello there")]}


def test_assembler_of_a_rewritten_stream_holds_the_redacted_text():
    out, _ = run_stream(KEY_REDACTION, text_stream("key sk-abc", "defgh12 ok, sk-", "xyz98765")[:5])
    # Cut after the deltas: the audit record holds only what the client was sent.
    assert assemble(out).result()["output"][0]["content"][0]["text"] == "key [key] ok, "


def test_assembler_records_an_error_event():
    error = {"type": "error", "sequence_number": 3, "code": "server_error", "message": "boom", "param": None}
    result = assemble([created(0), error]).result()
    assert result["error"] == {"type": "error", "code": "server_error", "message": "boom", "param": None}
    assert result["id"] == "resp_1"


def test_assembler_of_an_empty_stream():
    assembler = assemble([])
    assert assembler.result() == {"object": "response", "output": []}
    assert assembler.object_id is None


# --- framing, terminal events, errors -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "terminal"),
    [
        ("response.completed", True),
        ("response.incomplete", True),
        ("response.failed", True),
        ("response.created", False),
        ("response.in_progress", False),
        ("response.output_text.done", False),
        ("response.output_item.done", False),
        ("response.content_part.done", False),
        ("error", False),
    ],
)
def test_is_terminal(kind, terminal):
    assert surfaces.RESPONSES.is_terminal({"type": kind, "sequence_number": 1}) is terminal


def test_events_are_framed_with_their_type():
    event = delta("hi", 4)
    framed = surfaces.RESPONSES.frame(event)
    assert framed.startswith(b"event: response.output_text.delta\ndata: ")
    assert framed.endswith(b"\n\n")
    assert json.loads(framed.split(b"\n")[1][len(b"data: ") :]) == event


def parse_sse(frame: bytes) -> tuple[bytes, dict]:
    assert frame.endswith(b"\n\n")
    head, data = frame[:-2].split(b"\n")
    assert data.startswith(b"data: ")
    return head, json.loads(data[len(b"data: ") :])


@pytest.mark.parametrize(
    "error",
    [
        pytest.param({"message": "cut", "param": None, "code": "upstream_stream_interrupted"}, id="without-type"),
        pytest.param(
            {
                "message": "The upstream model server ended the stream before it was complete.",
                "type": "upstream_error",
                "param": None,
                "code": "upstream_stream_interrupted",
            },
            # What the relay passes: ProxyError.body()["error"], OpenAI's error object with its own "type".
            id="openai-error-object",
        ),
    ],
)
def test_error_event_is_a_named_error_event(error):
    head, data = parse_sse(surfaces.RESPONSES.error_event(error))
    assert head == b"event: error"
    assert data["type"] == "error"
    assert (data["code"], data["message"], data["param"]) == (error["code"], error["message"], None)


def test_error_body_is_openais_envelope():
    error = {"message": "m", "type": "invalid_request_error", "param": None, "code": "x"}
    assert surfaces.RESPONSES.error_body(error) == {"error": error}
