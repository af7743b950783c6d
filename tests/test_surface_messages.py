"""The Anthropic Messages surface over plain dicts: what each policy setting does to /v1/messages (and
/v1/messages/count_tokens) requests, answers and streams (`system` and `messages` in, content blocks out)."""

import copy
import json

import pytest

from policies import engine, surfaces
from policies.engine import (
    MESSAGES,
    MESSAGES_COUNT_TOKENS,
    PolicyRejection,
    RequestContext,
    ResponseContext,
    apply_request,
    apply_response,
)
from policies.spec import PASS_THROUGH, PolicySpec
from policies.streams import StreamRewriter, stream_needs_rewrite
from policies.surfaces.messages import MessagesAssembler

ALICE = RequestContext(key_name="alice-laptop", client_ip="203.0.113.7")
MODEL = "claude-sonnet-4-20250514"


def make_spec(**content) -> PolicySpec:
    return PolicySpec.from_content(name="team-a", version=3, content=content, id=7)


def plan(content: dict, body: dict, endpoint: str = MESSAGES, context: RequestContext = ALICE) -> engine.RequestPlan:
    """apply_request, checking on every call that the client's body is left untouched."""
    before = copy.deepcopy(body)
    result = apply_request(make_spec(**content), endpoint, body, context)
    assert body == before
    return result


def create(*messages: tuple[str, object], **fields) -> dict:
    """A POST /v1/messages body (one user turn unless messages are given)."""
    turns = messages or (("user", "Hi"),)
    return {"model": MODEL, "max_tokens": 1024, "messages": [{"role": r, "content": c} for r, c in turns], **fields}


def count(*messages: tuple[str, object], **fields) -> dict:
    """A POST /v1/messages/count_tokens body: no max_tokens."""
    body = create(*messages, **fields)
    del body["max_tokens"]
    return body


def test_the_surfaces_are_registered_under_their_endpoint_names():
    assert (MESSAGES, MESSAGES_COUNT_TOKENS) == ("messages", "messages_count_tokens")
    assert surfaces.surface_for("messages") is surfaces.MESSAGES
    assert surfaces.surface_for("messages_count_tokens") is surfaces.MESSAGES_COUNT_TOKENS
    assert surfaces.MESSAGES.group == surfaces.MESSAGES_COUNT_TOKENS.group == "messages"


def test_a_policy_with_everything_off_changes_nothing():
    body = create(system="Be long.", temperature=0.5, metadata={"user_id": "bob"})
    result = apply_request(PASS_THROUGH, MESSAGES, body, ALICE)
    assert result.body == body
    assert result.body is not body
    assert result.modifications == []
    assert (result.original_model, result.upstream_model) == (MODEL, MODEL)


# --- models -----------------------------------------------------------------------------------

ALLOW = {"allowed_models": ["claude-sonnet-4-*"], "model_aliases": {"fast": "claude-3-5-haiku-latest"}}


@pytest.mark.parametrize("endpoint", [MESSAGES, MESSAGES_COUNT_TOKENS])
@pytest.mark.parametrize(
    ("model", "upstream", "modifications"),
    [
        pytest.param(MODEL, MODEL, [], id="allowed-by-glob"),
        pytest.param("fast", "claude-3-5-haiku-latest", ["alias:fast->claude-3-5-haiku-latest"], id="alias"),
    ],
)
def test_allowed_models_and_aliases(endpoint, model, upstream, modifications):
    result = plan(ALLOW, count(model=model), endpoint)
    assert result.body == count(model=upstream)
    assert result.modifications == modifications
    assert (result.original_model, result.upstream_model) == (model, upstream)


@pytest.mark.parametrize("endpoint", [MESSAGES, MESSAGES_COUNT_TOKENS])
@pytest.mark.parametrize("model", ["claude-3-5-haiku-latest", "claude-opus-4-1", "gpt-4o"])
def test_models_outside_the_policy_are_refused(endpoint, model):
    with pytest.raises(PolicyRejection) as caught:
        plan(ALLOW, count(model=model), endpoint)
    rejection = caught.value
    assert (rejection.status, rejection.code, rejection.param) == (403, "model_not_allowed", "model")
    assert rejection.message == f'The model "{model}" is not allowed for this API key.'


# --- system context: `system` -----------------------------------------------------------------

BLOCKS = [
    {"type": "text", "text": "Be long."},
    {"type": "text", "text": "Cite sources.", "cache_control": {"type": "ephemeral"}},
]


@pytest.mark.parametrize("endpoint", [MESSAGES, MESSAGES_COUNT_TOKENS])
@pytest.mark.parametrize(
    ("mode", "client", "expected", "modified"),
    [
        pytest.param("if_missing", {}, {"system": "Be brief."}, True, id="if_missing-adds-when-none"),
        pytest.param("if_missing", {"system": ""}, {"system": "Be brief."}, True, id="if_missing-empty-is-missing"),
        pytest.param(
            "if_missing",
            {"system": [{"type": "text", "text": " "}]},
            {"system": "Be brief."},
            True,
            id="if_missing-blank-blocks-are-missing",
        ),
        pytest.param("if_missing", {"system": "Be long."}, {"system": "Be long."}, False, id="if_missing-keeps-string"),
        pytest.param("if_missing", {"system": BLOCKS}, {"system": BLOCKS}, False, id="if_missing-keeps-blocks"),
        pytest.param(
            "prepend", {"system": "Be long."}, {"system": "Be brief.\n\nBe long."}, True, id="prepend-to-string"
        ),
        pytest.param(
            "prepend",
            {"system": BLOCKS},
            {"system": [{"type": "text", "text": "Be brief."}, *BLOCKS]},
            True,
            id="prepend-a-block-first",
        ),
        pytest.param("prepend", {}, {"system": "Be brief."}, True, id="prepend-alone"),
        pytest.param("replace", {"system": "Be long."}, {"system": "Be brief."}, True, id="replace-string"),
        pytest.param("replace", {"system": BLOCKS}, {"system": "Be brief."}, True, id="replace-blocks"),
        pytest.param("replace", {}, {"system": "Be brief."}, True, id="replace-when-none"),
    ],
)
def test_system_context_goes_to_system(endpoint, mode, client, expected, modified):
    content = {"system_context": "Be brief.", "system_context_mode": mode}
    result = plan(content, count(**client), endpoint)
    assert result.body == count(**expected)
    assert result.modifications == ([f"system_context:{mode}"] if modified else [])


# --- parameters ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "client", "expected", "modifications"),
    [
        pytest.param(
            {"param_defaults": {"max_completion_tokens": 512}},
            {"max_tokens": None},
            {"max_tokens": 512},
            ["default:max_tokens"],
            id="max_completion_tokens-is-max_tokens",
        ),
        pytest.param(
            {"param_defaults": {"max_completion_tokens": 512}},
            {},
            {"max_tokens": 1024},
            [],
            id="client-max_tokens-wins-over-a-default",
        ),
        pytest.param(
            {"param_overrides": {"max_tokens": 256}},
            {},
            {"max_tokens": 256},
            ["override:max_tokens"],
            id="max_tokens-override",
        ),
        pytest.param(
            {"param_defaults": {"stop": "###"}},
            {},
            {"max_tokens": 1024, "stop_sequences": ["###"]},
            ["default:stop_sequences"],
            id="stop-string-is-a-stop_sequences-list",
        ),
        pytest.param(
            {"param_defaults": {"stop": ["###", "END"]}},
            {},
            {"max_tokens": 1024, "stop_sequences": ["###", "END"]},
            ["default:stop_sequences"],
            id="stop-list",
        ),
        pytest.param(
            {"param_overrides": {"stop": "END"}},
            {"stop_sequences": ["END"]},
            {"max_tokens": 1024, "stop_sequences": ["END"]},
            [],
            id="override-already-satisfied-after-renaming",
        ),
        pytest.param(
            {"param_overrides": {"stop": "END"}},
            {"stop_sequences": ["STOP"]},
            {"max_tokens": 1024, "stop_sequences": ["END"]},
            ["override:stop_sequences"],
            id="override-replaces-the-clients-stop_sequences",
        ),
        pytest.param(
            {
                "param_defaults": {
                    "seed": 1,
                    "presence_penalty": 0.5,
                    "frequency_penalty": 0.1,
                    "n": 2,
                    "logit_bias": {"50256": -100},
                    "temperature": 0.3,
                },
                "param_overrides": {"seed": 7, "top_k": 40},
            },
            {},
            {"max_tokens": 1024, "temperature": 0.3, "top_k": 40},
            ["default:temperature", "override:top_k"],
            id="openai-only-params-are-not-sent",
        ),
        pytest.param(
            {"model_rules": [{"pattern": "claude-*", "defaults": {"max_completion_tokens": 99, "seed": 1}}]},
            {"max_tokens": None},
            {"max_tokens": 99},
            ["model_rule:claude-*:max_tokens"],
            id="model-rule-renamed",
        ),
    ],
)
def test_params_in_messages_terms(content, client, expected, modifications):
    result = plan(content, create(**client))
    assert result.body == {**create(), **expected}
    assert result.modifications == modifications


@pytest.mark.parametrize(
    ("content", "client_max", "expected", "modifications"),
    [
        pytest.param({}, 8192, 4096, ["ceiling:max_tokens:8192->4096"], id="clamped"),
        pytest.param({}, 1024, 1024, [], id="under"),
        pytest.param({}, 4096, 4096, [], id="at"),
        pytest.param(
            {"param_overrides": {"max_completion_tokens": 9000}},
            1024,
            4096,
            ["override:max_tokens", "ceiling:max_tokens:9000->4096"],
            id="clamps-an-override-too",
        ),
    ],
)
def test_max_tokens_ceiling_clamps_max_tokens(content, client_max, expected, modifications):
    result = plan({**content, "max_tokens_ceiling": 4096}, create(max_tokens=client_max))
    assert result.body == create(max_tokens=expected)
    assert result.modifications == modifications


# --- blocked patterns ---------------------------------------------------------------------------

NO_SSN = {
    "blocked_patterns": [{"name": "other", "pattern": "zzz"}, {"name": "no-ssn", "pattern": r"\b\d{3}-\d{2}-\d{4}\b"}]
}
SSN = "my number is 123-45-6789"
IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}


def tool_turns(result_content) -> tuple:
    """A tool call and its result, as a client replays them."""
    return (
        ("user", "Look it up"),
        ("assistant", [{"type": "tool_use", "id": "toolu_01", "name": "lookup", "input": {"q": "me"}}]),
        ("user", [{"type": "tool_result", "tool_use_id": "toolu_01", "content": result_content}]),
    )


@pytest.mark.parametrize("endpoint", [MESSAGES, MESSAGES_COUNT_TOKENS])
@pytest.mark.parametrize(
    ("body", "param"),
    [
        pytest.param(count(system=SSN), "system", id="system-string"),
        pytest.param(
            count(system=[{"type": "text", "text": "Be brief."}, {"type": "text", "text": SSN}]),
            "system",
            id="system-blocks",
        ),
        pytest.param(count(("user", SSN)), "messages", id="content-string"),
        pytest.param(count(("user", "Hi"), ("assistant", SSN), ("user", "ok")), "messages", id="any-role"),
        pytest.param(count(("user", [IMAGE, {"type": "text", "text": SSN}])), "messages", id="text-block"),
        pytest.param(count(*tool_turns(SSN)), "messages", id="tool_result-string"),
        pytest.param(
            count(*tool_turns([{"type": "text", "text": "found:"}, {"type": "text", "text": SSN}])),
            "messages",
            id="tool_result-blocks",
        ),
        pytest.param(
            count(("user", "Hi"), ("assistant", [{"type": "tool_use", "id": "t", "name": "f", "input": {"n": SSN}}])),
            "messages",
            id="replayed-tool_use-input",
        ),
    ],
)
def test_blocked_patterns_search_system_and_messages(endpoint, body, param):
    with pytest.raises(PolicyRejection) as caught:
        plan(NO_SSN, body, endpoint)
    rejection = caught.value
    assert (rejection.status, rejection.code, rejection.param) == (400, "content_policy_violation", param)
    assert rejection.message == 'The request was blocked by the content policy rule "no-ssn".'
    assert "123-45" not in rejection.message


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(count(("user", "call 555-1234"), system="id 1234-56-7890"), id="near-misses"),
        pytest.param(count(*tool_turns([IMAGE])), id="tool_result-image"),
    ],
)
def test_blocked_patterns_pass_clean_text(body):
    assert plan(NO_SSN, body).body == body


# --- the user field: metadata.user_id -----------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "override", "metadata", "expected", "modifications"),
    [
        pytest.param("leave", False, None, None, [], id="leave"),
        pytest.param("key_name", False, None, {"user_id": "alice-laptop"}, ["user:key_name"], id="key_name"),
        pytest.param("client_ip", False, None, {"user_id": "203.0.113.7"}, ["user:client_ip"], id="client_ip"),
        pytest.param(
            "key_name",
            False,
            {"trace": "t-1"},
            {"trace": "t-1", "user_id": "alice-laptop"},
            ["user:key_name"],
            id="other-metadata-kept",
        ),
        pytest.param("key_name", False, {"user_id": "bob"}, {"user_id": "bob"}, [], id="clients-user_id-kept"),
        pytest.param(
            "key_name",
            True,
            {"user_id": "bob", "trace": "t-1"},
            {"user_id": "alice-laptop", "trace": "t-1"},
            ["user:key_name"],
            id="override",
        ),
        pytest.param(
            "key_name", True, {"user_id": "alice-laptop"}, {"user_id": "alice-laptop"}, [], id="override-same"
        ),
    ],
)
def test_user_field_goes_to_metadata_user_id(mode, override, metadata, expected, modifications):
    client = {} if metadata is None else {"metadata": metadata}
    result = plan({"user_field": mode, "user_field_override": override}, create(**client))
    assert result.body.get("metadata") == expected
    assert "user" not in result.body
    assert result.modifications == modifications


# --- count_tokens: no generation parameters -----------------------------------------------------


def test_count_tokens_takes_no_params_ceiling_or_user():
    content = {
        "param_defaults": {"max_tokens": 256, "temperature": 0.2, "stop": "END"},
        "param_overrides": {"top_k": 5},
        "model_rules": [{"pattern": "*", "defaults": {"top_p": 0.9}}],
        "max_tokens_ceiling": 100,
        "user_field": "key_name",
        "user_field_override": True,
    }
    body = count(max_tokens=5000, metadata={"user_id": "bob"})
    result = plan(content, body, MESSAGES_COUNT_TOKENS)
    assert result.body == body
    assert result.modifications == []


def test_count_tokens_gets_model_alias_and_system_context_like_messages():
    content = {"model_aliases": {"fast": "claude-3-5-haiku-latest"}, "system_context": "Be brief."}
    result = plan(content, count(model="fast"), MESSAGES_COUNT_TOKENS)
    assert result.body == count(model="claude-3-5-haiku-latest", system="Be brief.")
    assert result.modifications == ["alias:fast->claude-3-5-haiku-latest", "system_context:if_missing"]


def test_all_modifications_in_order():
    content = {
        "model_aliases": {"fast": "claude-3-5-haiku-latest"},
        "system_context": "Be brief.",
        "model_rules": [{"pattern": "claude-3-5-*", "defaults": {"temperature": 0}}],
        "param_defaults": {"seed": 1, "stop": "END"},
        "param_overrides": {"max_completion_tokens": 8000},
        "max_tokens_ceiling": 2048,
        "user_field": "key_name",
    }
    result = plan(content, create(model="fast"))
    assert result.modifications == [
        "alias:fast->claude-3-5-haiku-latest",
        "system_context:if_missing",
        "model_rule:claude-3-5-*:temperature",
        "default:stop_sequences",
        "override:max_tokens",
        "ceiling:max_tokens:8000->2048",
        "user:key_name",
    ]
    assert result.body == {
        "model": "claude-3-5-haiku-latest",
        "max_tokens": 2048,
        "messages": [{"role": "user", "content": "Hi"}],
        "system": "Be brief.",
        "temperature": 0,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "alice-laptop"},
    }


# --- JSON answers ---------------------------------------------------------------------------------

SECRETS = {
    "response_redactions": [
        {"pattern": r"sk-[A-Za-z0-9]{8,}", "replacement": "[key]"},
        {"pattern": r"(?i)password: *\S+"},  # default replacement
    ]
}
NO_ANNOTATION = ResponseContext(original_model=MODEL, modifications=(), processing_ms=1.5)
TOOL_USE = {"type": "tool_use", "id": "toolu_01", "name": "lookup", "input": {"key": "sk-abcdefgh1234"}}
THINKING = {"type": "thinking", "thinking": "the key is sk-abcdefgh1234", "signature": "c2ln"}


def answer(*blocks: dict, stop_reason: str = "end_turn") -> dict:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": list(blocks),
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 25, "output_tokens": 12},
    }


def text(value: str) -> dict:
    return {"type": "text", "text": value}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(answer(text("use sk-abcdefgh1234 ok")), answer(text("use [key] ok")), id="text-block"),
        pytest.param(
            answer(text("Password: hunter2"), text("fine"), text("key sk-ABCDEFGH99")),
            answer(text("[redacted]"), text("fine"), text("key [key]")),
            id="several-blocks",
        ),
        pytest.param(
            answer(THINKING, text("calling sk-abcdefgh1234"), TOOL_USE, stop_reason="tool_use"),
            answer(THINKING, text("calling [key]"), TOOL_USE, stop_reason="tool_use"),
            id="tool_use-and-thinking-untouched",
        ),
    ],
)
def test_response_redactions(body, expected):
    before = copy.deepcopy(body)
    result = apply_response(make_spec(**SECRETS), MESSAGES, body, NO_ANNOTATION)
    assert result == expected
    assert body == before


def test_tool_use_blocks_are_the_same_objects_after_redaction():
    body = answer(text("sk-abcdefgh1234"), TOOL_USE, stop_reason="tool_use")
    result = apply_response(make_spec(**SECRETS), MESSAGES, body, NO_ANNOTATION)
    assert result["content"][1] is body["content"][1]


def test_an_answer_with_nothing_to_redact_is_returned_as_is():
    body = answer(text("nothing secret"), TOOL_USE, stop_reason="tool_use")
    assert apply_response(make_spec(**SECRETS), MESSAGES, body, NO_ANNOTATION) is body
    count_answer = {"input_tokens": 14}
    assert apply_response(make_spec(**SECRETS), MESSAGES_COUNT_TOKENS, count_answer, NO_ANNOTATION) is count_answer


def test_annotations_add_proxy_info():
    spec = make_spec(annotate_responses=True, **SECRETS)
    context = ResponseContext(original_model="fast", modifications=("alias:fast->x",), processing_ms=3.0)
    result = apply_response(spec, MESSAGES, answer(text("sk-abcdefgh1234")), context)
    assert result == {
        **answer(text("[key]")),
        "usage": {"input_tokens": 25, "output_tokens": 12, "aiproxy_processing_ms": 3.0},
        "_proxy_info": {
            "policy": "team-a",
            "policy_version": 3,
            "original_model": "fast",
            "modifications": ["alias:fast->x"],
            "processing_ms": 3.0,
        },
    }


# --- streams ------------------------------------------------------------------------------------

KEY_REDACTION = make_spec(response_redactions=[{"pattern": r"sk-[A-Za-z0-9]{8,}", "replacement": "[key]"}])
MESSAGE_START = {
    "type": "message_start",
    "message": {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 25,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": None,
            "output_tokens": 1,
        },
    },
}
PING = {"type": "ping"}
MESSAGE_STOP = {"type": "message_stop"}


def block_start(index: int, block: dict) -> dict:
    return {"type": "content_block_start", "index": index, "content_block": block}


def text_delta(index: int, value: str) -> dict:
    return {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": value}}


def json_delta(index: int, partial: str) -> dict:
    return {
        "type": "content_block_delta",
        "index": index,
        "delta": {"type": "input_json_delta", "partial_json": partial},
    }


def block_stop(index: int) -> dict:
    return {"type": "content_block_stop", "index": index}


def message_delta(stop_reason: str, output_tokens: int) -> dict:
    return {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": {"output_tokens": output_tokens},
    }


def text_stream(*pieces: str) -> list[dict]:
    """A whole stream answering one text block whose text arrives in these deltas."""
    return [
        MESSAGE_START,
        block_start(0, {"type": "text", "text": ""}),
        PING,
        *(text_delta(0, piece) for piece in pieces),
        block_stop(0),
        message_delta("end_turn", 15),
        MESSAGE_STOP,
    ]


def run_stream(spec: PolicySpec, events: list[dict]) -> tuple[list[dict], list[dict]]:
    """All rewritten events and flush()'s events, checking the input events are never mutated."""
    rewriter = StreamRewriter(spec, MESSAGES)
    before = copy.deepcopy(events)
    out = [sent for event in events for sent in rewriter.on_event(event)]
    assert events == before
    return out, rewriter.flush()


def texts_of(events: list[dict]) -> list[str]:
    return [e["delta"]["text"] for e in events if e["type"] == "content_block_delta" and "text" in e["delta"]]


def test_stream_redaction_split_across_two_deltas():
    events = text_stream("key sk-abc", "defgh12 ok")
    out, flushed = run_stream(KEY_REDACTION, events)
    assert out == [
        MESSAGE_START,
        block_start(0, {"type": "text", "text": ""}),
        PING,
        text_delta(0, "key "),
        text_delta(0, "[key] ok"),
        block_stop(0),
        message_delta("end_turn", 15),
        MESSAGE_STOP,
    ]
    assert flushed == []


def test_held_text_is_released_just_before_content_block_stop():
    out, flushed = run_stream(KEY_REDACTION, text_stream("key sk-abc", "defgh12 ok, sk-", "xyz98765"))
    assert out[3:] == [
        text_delta(0, "key "),
        text_delta(0, "[key] ok, "),
        text_delta(0, ""),
        text_delta(0, "[key]"),  # the held text, released
        block_stop(0),
        message_delta("end_turn", 15),
        MESSAGE_STOP,
    ]
    assert flushed == []


def test_events_without_answer_text_pass_through_as_the_same_object():
    events = [
        MESSAGE_START,
        PING,
        block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "c2ln"}},
        block_stop(0),
        block_start(1, {"type": "tool_use", "id": "toolu_01", "name": "lookup", "input": {}}),
        json_delta(1, '{"key": "sk-abcd'),
        json_delta(1, 'efgh1234"}'),
        block_stop(1),
        message_delta("tool_use", 40),
        MESSAGE_STOP,
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    ]
    rewriter = StreamRewriter(KEY_REDACTION, MESSAGES)
    for event in events:
        [sent] = rewriter.on_event(event)
        assert sent is event, event["type"]
    assert rewriter.flush() == []


def test_each_block_has_its_own_buffer():
    events = [
        text_delta(0, "a sk-abc"),
        text_delta(1, "b sk-xyz"),
        text_delta(0, "defgh12 c"),
        block_stop(0),
        text_delta(1, "98765432 d"),
        block_stop(1),
    ]
    out, flushed = run_stream(KEY_REDACTION, events)
    assert out == [
        text_delta(0, "a "),
        text_delta(1, "b "),
        text_delta(0, "[key] c"),
        block_stop(0),
        text_delta(1, "[key] d"),
        block_stop(1),
    ]
    assert flushed == []


def test_flush_releases_text_held_when_the_stream_is_cut():
    events = [MESSAGE_START, block_start(0, {"type": "text", "text": ""}), text_delta(0, "ids sk-abcdefgh12")]
    out, flushed = run_stream(KEY_REDACTION, events)
    assert texts_of(out) == ["ids "]
    assert flushed == [text_delta(0, "[key]")]


def test_stream_needs_rewrite_only_for_messages_with_redactions():
    assert stream_needs_rewrite(KEY_REDACTION, MESSAGES) is True
    assert stream_needs_rewrite(KEY_REDACTION, MESSAGES_COUNT_TOKENS) is False
    assert stream_needs_rewrite(make_spec(annotate_responses=True), MESSAGES) is False
    rewriter = StreamRewriter(make_spec(), MESSAGES)
    event = text_delta(0, "sk-abcdefgh1234")
    assert rewriter.on_event(event)[0] is event


# --- the assembler (the audit record of a stream) -------------------------------------------------


def assemble(events: list[dict]) -> MessagesAssembler:
    assembler = surfaces.MESSAGES.assembler()
    for event in events:
        assembler.add(event)
    return assembler


def tool_call_stream() -> list[dict]:
    return [
        MESSAGE_START,
        block_start(0, {"type": "text", "text": ""}),
        PING,
        text_delta(0, "Let me "),
        text_delta(0, "check."),
        block_stop(0),
        block_start(1, {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}}),
        json_delta(1, ""),
        json_delta(1, '{"city": "Pa'),
        json_delta(1, 'ris", "days": 2}'),
        block_stop(1),
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"input_tokens": None, "output_tokens": 42},
        },
        MESSAGE_STOP,
    ]


def test_assembler_rebuilds_the_whole_message():
    assembler = assemble(tool_call_stream())
    assert assembler.result() == {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris", "days": 2}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        # input_tokens from message_start, output_tokens from message_delta; nulls never overwrite.
        "usage": {"input_tokens": 25, "cache_creation_input_tokens": 0, "output_tokens": 42},
    }
    assert assembler.object_id is None


def test_assembler_of_a_stream_cut_mid_tool_input():
    result = assemble(tool_call_stream()[:9]).result()
    assert result["content"] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": None, "partial_json": '{"city": "Pa'},
    ]
    assert result["stop_reason"] is None
    assert result["usage"] == {"input_tokens": 25, "cache_creation_input_tokens": 0, "output_tokens": 1}


def test_assembler_of_a_rewritten_stream_holds_the_redacted_text():
    out, _ = run_stream(KEY_REDACTION, text_stream("key sk-abc", "defgh12 ok, sk-", "xyz98765"))
    assert assemble(out).result()["content"] == [{"type": "text", "text": "key [key] ok, [key]"}]


def test_assembler_records_an_error_event():
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    result = assemble([MESSAGE_START, error]).result()
    assert result["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    assert result["id"] == "msg_01"


# --- framing, terminal events, errors -------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "terminal"),
    [
        (MESSAGE_STOP, True),
        (message_delta("end_turn", 3), False),
        (block_stop(0), False),
        (MESSAGE_START, False),
        (PING, False),
        ({"type": "error", "error": {"type": "api_error", "message": "x"}}, False),
    ],
)
def test_is_terminal_only_for_message_stop(event, terminal):
    assert surfaces.MESSAGES.is_terminal(event) is terminal


OPENAI_ERROR = {
    "message": "The upstream model server ended the stream before it was complete.",
    "type": "upstream_error",
    "param": None,
    "code": "upstream_stream_interrupted",
}


def test_error_event_is_anthropics_error_event():
    frame = surfaces.MESSAGES.error_event(OPENAI_ERROR)
    assert frame.endswith(b"\n\n")
    head, data = frame[:-2].split(b"\n")
    assert head == b"event: error"
    assert data.startswith(b"data: ")
    assert json.loads(data[len(b"data: ") :]) == {"type": "error", "error": OPENAI_ERROR}


def test_error_body_wraps_openais_error_object():
    assert surfaces.MESSAGES.error_body(OPENAI_ERROR) == {"type": "error", "error": OPENAI_ERROR}
    assert surfaces.MESSAGES_COUNT_TOKENS.error_body(OPENAI_ERROR) == {"type": "error", "error": OPENAI_ERROR}


def test_events_are_framed_with_their_type():
    event = text_delta(0, "hi")
    assert (
        surfaces.MESSAGES.frame(event)
        == b"event: content_block_delta\ndata: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"
    )
