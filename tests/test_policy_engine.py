"""The policy engine over plain dicts: what each policy setting does to requests, responses and streams."""

import copy
import random
import re
from types import MappingProxyType

import pytest

from policies import engine
from policies.engine import (
    AUDIO_SPEECH,
    AUDIO_TRANSCRIPTIONS,
    CHAT,
    COMPLETIONS,
    EMBEDDINGS,
    IMAGES,
    MODELS,
    MODERATIONS,
    OTHER,
    PolicyRejection,
    RequestContext,
    ResponseContext,
    apply_request,
    apply_response,
    filter_models_list,
    model_allowed,
    redact_text,
)
from policies.partial_match import PrefixMatcher
from policies.spec import DEFAULT_CONTENT, PASS_THROUGH, STREAM_HOLD_LIMIT, PolicySpec
from policies.streams import StreamRewriter, stream_needs_rewrite

ALICE = RequestContext(key_name="alice-laptop", client_ip="203.0.113.7")


def make_spec(**content) -> PolicySpec:
    return PolicySpec.from_content(name="team-a", version=3, content=content, id=7)


def plan(content: dict, endpoint: str, body: dict, context: RequestContext = ALICE) -> engine.RequestPlan:
    """apply_request, checking on every call that the client's body is left untouched."""
    before = copy.deepcopy(body)
    result = apply_request(make_spec(**content), endpoint, body, context)
    assert body == before
    return result


def chat(*messages: tuple[str, str], **params) -> dict:
    return {"model": "gpt-4o", "messages": [{"role": r, "content": c} for r, c in messages], **params}


# --- the spec -------------------------------------------------------------------------------


def test_spec_from_empty_content_takes_every_default():
    spec = PolicySpec.from_content(name="p", version=1, content={})
    assert spec.system_context == DEFAULT_CONTENT["system_context"]
    assert spec.system_context_mode == "if_missing"
    assert spec.param_defaults == {}
    assert spec.model_rules == ()
    assert spec.allowed_models == ()
    assert spec.max_tokens_ceiling is None
    assert spec.user_field == "leave"
    assert spec.audit_capture == "full"
    assert spec.audit_retention_days is None
    assert spec.id is None


def test_spec_is_detached_from_the_content_it_was_built_from():
    content = {"param_defaults": {"stop": ["###"]}, "allowed_models": ["gpt-4o"], "audit_retention_days": 30}
    spec = PolicySpec.from_content(name="p", version=2, content=content, id=9)
    content["param_defaults"]["stop"].append("changed")
    content["allowed_models"].append("gpt-5")
    assert spec.param_defaults == {"stop": ["###"]}
    assert spec.allowed_models == ("gpt-4o",)
    assert isinstance(spec.param_defaults, MappingProxyType)
    assert (spec.name, spec.version, spec.id, spec.audit_retention_days) == ("p", 2, 9, 30)


def test_pass_through_changes_nothing_on_any_endpoint():
    body = chat(("user", "hi"), temperature=1.0, user="bob")
    for endpoint in (CHAT, COMPLETIONS, EMBEDDINGS, MODERATIONS, IMAGES, AUDIO_SPEECH):
        result = apply_request(PASS_THROUGH, endpoint, body, ALICE)
        assert result.body == body
        assert result.body is not body  # a new top-level dict the caller may change
        assert result.modifications == []
        assert (result.original_model, result.upstream_model) == ("gpt-4o", "gpt-4o")


def test_unknown_endpoints_get_the_body_back_as_is():
    body = {"model": "forbidden", "messages": [{"role": "user", "content": "123-45-6789"}]}
    spec = make_spec(allowed_models=["gpt-4o"], blocked_patterns=[{"name": "ssn", "pattern": r"\d{3}-\d{2}"}])
    for endpoint in (OTHER, MODELS):
        assert apply_request(spec, endpoint, body, ALICE).body is body


# --- system context -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "messages", "expected", "modified"),
    [
        pytest.param(
            "if_missing",
            [("user", "hi")],
            [("system", "Be brief."), ("user", "hi")],
            True,
            id="if_missing-adds-when-none",
        ),
        pytest.param(
            "if_missing",
            [("system", "Be long."), ("user", "hi")],
            [("system", "Be long."), ("user", "hi")],
            False,
            id="if_missing-keeps-the-clients",
        ),
        pytest.param(
            "if_missing",
            [("developer", "Be long."), ("user", "hi")],
            [("developer", "Be long."), ("user", "hi")],
            False,
            id="if_missing-developer-counts-as-system",
        ),
        pytest.param(
            "prepend",
            [("system", "Be long."), ("user", "hi")],
            [("system", "Be brief."), ("system", "Be long."), ("user", "hi")],
            True,
            id="prepend-always-first",
        ),
        pytest.param(
            "replace",
            [("user", "hi"), ("system", "Be long."), ("assistant", "yo"), ("developer", "x")],
            [("system", "Be brief."), ("user", "hi"), ("assistant", "yo")],
            True,
            id="replace-drops-the-clients",
        ),
    ],
)
def test_system_context_in_chat(mode, messages, expected, modified):
    result = plan({"system_context": "Be brief.", "system_context_mode": mode}, CHAT, chat(*messages))
    assert [(m["role"], m["content"]) for m in result.body["messages"]] == expected
    assert result.modifications == ([f"system_context:{mode}"] if modified else [])


@pytest.mark.parametrize("mode", ["if_missing", "prepend", "replace"])
@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        pytest.param("Say hi", "Be brief.\n\nSay hi", id="string"),
        pytest.param(["A", "B"], ["Be brief.\n\nA", "Be brief.\n\nB"], id="list-of-strings"),
        pytest.param([1, 2, 3], [1, 2, 3], id="token-ids-untouched"),
    ],
)
def test_system_context_prefixes_completions_prompts(mode, prompt, expected):
    content = {"system_context": "Be brief.", "system_context_mode": mode}
    result = plan(content, COMPLETIONS, {"model": "gpt-3.5-turbo-instruct", "prompt": prompt})
    assert result.body["prompt"] == expected
    assert result.modifications == ([] if prompt == expected else [f"system_context:{mode}"])


def test_empty_system_context_is_off():
    result = plan({"system_context": "", "system_context_mode": "replace"}, CHAT, chat(("system", "mine")))
    assert result.body["messages"] == [{"role": "system", "content": "mine"}]
    assert result.modifications == []


@pytest.mark.parametrize("endpoint", [EMBEDDINGS, MODERATIONS, IMAGES])
def test_system_context_only_applies_to_text_generation(endpoint):
    body = {"model": "m", "input": "x", "prompt": "y"}
    assert plan({"system_context": "Be brief."}, endpoint, body).body == body


# --- parameters -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "client", "expected", "modifications"),
    [
        pytest.param({"param_defaults": {"temperature": 0.2}}, {}, {"temperature": 0.2}, ["default:temperature"]),
        pytest.param({"param_defaults": {"temperature": 0.2}}, {"temperature": 0.9}, {"temperature": 0.9}, []),
        pytest.param(
            {"param_defaults": {"temperature": 0.2}},
            {"temperature": None},
            {"temperature": 0.2},
            ["default:temperature"],
            id="null-counts-as-unset",
        ),
        pytest.param({"param_overrides": {"top_p": 0.5}}, {"top_p": 1}, {"top_p": 0.5}, ["override:top_p"]),
        pytest.param({"param_overrides": {"top_p": 0.5}}, {}, {"top_p": 0.5}, ["override:top_p"]),
        pytest.param({"param_overrides": {"top_p": 0.5}}, {"top_p": 0.5}, {"top_p": 0.5}, [], id="override-same"),
        pytest.param(
            {"param_defaults": {"seed": 1}, "param_overrides": {"seed": 2}},
            {},
            {"seed": 2},
            ["default:seed", "override:seed"],
            id="override-beats-default",
        ),
        pytest.param(
            {"model_rules": [{"pattern": "gpt-4*", "defaults": {"temperature": 0.3}}]},
            {},
            {"temperature": 0.3},
            ["model_rule:gpt-4*:temperature"],
            id="model-rule-matches",
        ),
        pytest.param(
            {"model_rules": [{"pattern": "claude-*", "defaults": {"temperature": 0.3}}]},
            {},
            {},
            [],
            id="model-rule-other-model",
        ),
        pytest.param(
            {"model_rules": [{"pattern": "gpt-4*", "defaults": {"temperature": 0.3}}]},
            {"temperature": 1.0},
            {"temperature": 1.0},
            [],
            id="model-rule-client-wins",
        ),
        pytest.param(
            {
                "model_rules": [
                    {"pattern": "gpt-4o", "defaults": {"temperature": 0.1}},
                    {"pattern": "gpt-*", "defaults": {"temperature": 0.9, "top_p": 0.8}},
                ]
            },
            {},
            {"temperature": 0.1, "top_p": 0.8},
            ["model_rule:gpt-4o:temperature", "model_rule:gpt-*:top_p"],
            id="first-rule-wins",
        ),
        pytest.param(
            {
                "model_rules": [{"pattern": "gpt-4*", "defaults": {"temperature": 0.3}}],
                "param_defaults": {"temperature": 0.7, "seed": 42},
            },
            {},
            {"temperature": 0.3, "seed": 42},
            ["model_rule:gpt-4*:temperature", "default:seed"],
            id="model-rule-beats-policy-default",
        ),
    ],
)
def test_defaults_client_values_and_overrides(content, client, expected, modifications):
    result = plan(content, CHAT, chat(("user", "hi"), **client))
    params = {k: v for k, v in result.body.items() if k not in ("model", "messages")}
    assert params == expected
    assert result.modifications == modifications


def test_model_rules_match_the_upstream_model_after_aliasing():
    content = {
        "model_aliases": {"fast": "gpt-4o-mini"},
        "model_rules": [{"pattern": "gpt-4o-mini", "defaults": {"temperature": 0}}],
    }
    result = plan(content, CHAT, {"model": "fast", "messages": []})
    assert result.body["temperature"] == 0
    assert result.modifications == ["alias:fast->gpt-4o-mini", "model_rule:gpt-4o-mini:temperature"]


def test_param_values_are_copied_not_shared_with_the_spec():
    spec = make_spec(param_defaults={"stop": ["###"]})
    first = apply_request(spec, CHAT, chat(("user", "hi")), ALICE)
    first.body["stop"].append("mutated by caller")
    second = apply_request(spec, CHAT, chat(("user", "hi")), ALICE)
    assert second.body["stop"] == ["###"]


@pytest.mark.parametrize("endpoint", [EMBEDDINGS, MODERATIONS, IMAGES, AUDIO_SPEECH])
def test_sampling_parameters_only_go_to_text_generation(endpoint):
    content = {
        "param_defaults": {"temperature": 0.2},
        "param_overrides": {"max_tokens": 5},
        "model_rules": [{"pattern": "*", "defaults": {"top_p": 1}}],
    }
    body = {"model": "text-embedding-3-small", "input": "x"}
    assert plan(content, endpoint, body).body == body


@pytest.mark.parametrize(
    ("client", "expected", "modifications"),
    [
        pytest.param({"max_tokens": 4096}, {"max_tokens": 2048}, ["ceiling:max_tokens:4096->2048"]),
        pytest.param({"max_tokens": 100}, {"max_tokens": 100}, [], id="under-the-ceiling"),
        pytest.param({"max_tokens": 2048}, {"max_tokens": 2048}, [], id="at-the-ceiling"),
        pytest.param(
            {"max_completion_tokens": 9000},
            {"max_completion_tokens": 2048},
            ["ceiling:max_completion_tokens:9000->2048"],
        ),
        pytest.param(
            {"max_tokens": 3000, "max_completion_tokens": 5000},
            {"max_tokens": 2048, "max_completion_tokens": 2048},
            ["ceiling:max_tokens:3000->2048", "ceiling:max_completion_tokens:5000->2048"],
            id="both",
        ),
        pytest.param({}, {}, [], id="absent-is-not-added"),
    ],
)
@pytest.mark.parametrize("endpoint", [CHAT, COMPLETIONS])
def test_max_tokens_ceiling(endpoint, client, expected, modifications):
    result = plan({"max_tokens_ceiling": 2048}, endpoint, {"model": "gpt-4o", "prompt": "x", **client})
    assert {k: v for k, v in result.body.items() if k.startswith("max_")} == expected
    assert result.modifications == modifications


def test_ceiling_clamps_an_override_too():
    result = plan({"param_overrides": {"max_tokens": 8000}, "max_tokens_ceiling": 1000}, CHAT, chat())
    assert result.body["max_tokens"] == 1000
    assert result.modifications == ["override:max_tokens", "ceiling:max_tokens:8000->1000"]


# --- models: allowed, aliases, the models list ----------------------------------------------

ALLOW = {"allowed_models": ["gpt-4o*", "openai/*"], "model_aliases": {"fast": "claude-3-haiku"}}


@pytest.mark.parametrize(
    ("model", "allowed", "upstream"),
    [
        ("gpt-4o", True, "gpt-4o"),
        ("gpt-4o-mini", True, "gpt-4o-mini"),
        ("openai/gpt-4.1", True, "openai/gpt-4.1"),
        ("GPT-4o", False, None),  # globs are case-sensitive
        ("gpt-3.5-turbo", False, None),
        ("claude-3-haiku", False, None),  # only reachable through its alias
        ("fast", True, "claude-3-haiku"),  # an alias is a grant, whatever allowed_models says
        ("gpt-4o,gpt-3.5-turbo", False, None),  # LiteLLM would fan this out to both
    ],
)
def test_allowed_models_and_aliases(model, allowed, upstream):
    assert model_allowed(make_spec(**ALLOW), model) is allowed
    if allowed:
        result = plan(ALLOW, CHAT, {"model": model, "messages": []})
        assert (result.original_model, result.upstream_model, result.body["model"]) == (model, upstream, upstream)
    else:
        with pytest.raises(PolicyRejection) as caught:
            plan(ALLOW, CHAT, {"model": model, "messages": []})
        rejection = caught.value
        assert (rejection.status, rejection.code, rejection.param) == (403, "model_not_allowed", "model")
        assert rejection.message == f'The model "{model}" is not allowed for this API key.'


@pytest.mark.parametrize(
    "endpoint", [CHAT, COMPLETIONS, EMBEDDINGS, MODERATIONS, IMAGES, AUDIO_SPEECH, AUDIO_TRANSCRIPTIONS]
)
def test_every_endpoint_with_a_model_checks_and_aliases_it(endpoint):
    with pytest.raises(PolicyRejection):
        plan(ALLOW, endpoint, {"model": "dall-e-3"})
    result = plan(ALLOW, endpoint, {"model": "fast"})
    assert result.body["model"] == "claude-3-haiku"
    assert "alias:fast->claude-3-haiku" in result.modifications


def test_empty_allowed_models_allows_everything():
    assert model_allowed(make_spec(), "anything/at-all")
    assert plan({}, CHAT, {"model": "anything/at-all", "messages": []}).modifications == []


def test_non_string_model_is_refused_when_models_are_restricted():
    with pytest.raises(PolicyRejection):
        plan(ALLOW, CHAT, {"model": ["gpt-4o"], "messages": []})


UPSTREAM_MODELS = {
    "object": "list",
    "data": [
        {"id": "gpt-4o", "object": "model", "owned_by": "openai"},
        {"id": "gpt-3.5-turbo", "object": "model", "owned_by": "openai"},
        {"id": "claude-3-haiku", "object": "model", "owned_by": "anthropic"},
        {"id": "fast", "object": "model", "owned_by": "someone"},
    ],
}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param({}, ["gpt-4o", "gpt-3.5-turbo", "claude-3-haiku", "fast"], id="no-restriction"),
        pytest.param({"allowed_models": ["gpt-*"]}, ["gpt-4o", "gpt-3.5-turbo"], id="allowed-only"),
        pytest.param(
            {"allowed_models": ["gpt-4o"], "model_aliases": {"fast": "claude-3-haiku", "smart": "o3"}},
            [("gpt-4o", "openai"), ("fast", "anthropic"), ("smart", "aiproxy")],
            id="aliases-copy-their-target-or-are-minimal",
        ),
        pytest.param(
            {"model_aliases": {"fast": "gpt-4o"}},
            [("gpt-4o", "openai"), ("gpt-3.5-turbo", "openai"), ("claude-3-haiku", "anthropic"), ("fast", "openai")],
            id="an-alias-shadows-an-upstream-model-of-the-same-name",
        ),
    ],
)
def test_models_list_filter(content, expected):
    before = copy.deepcopy(UPSTREAM_MODELS)
    result = filter_models_list(make_spec(**content), UPSTREAM_MODELS)
    assert UPSTREAM_MODELS == before
    if expected and isinstance(expected[0], tuple):
        assert [(m["id"], m["owned_by"]) for m in result["data"]] == expected
    else:
        assert [m["id"] for m in result["data"]] == expected
    assert result["object"] == "list"


def test_minimal_alias_entry_shape():
    result = filter_models_list(make_spec(model_aliases={"smart": "o3"}), {"object": "list", "data": []})
    assert result["data"] == [{"id": "smart", "object": "model", "owned_by": "aiproxy"}]


# --- embeddings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "body", "expected", "modifications"),
    [
        pytest.param(
            {"embedding_default_model": "text-embedding-3-small"},
            {"input": "x"},
            {"input": "x", "model": "text-embedding-3-small"},
            ["embedding_default_model"],
        ),
        pytest.param(
            {"embedding_default_model": "text-embedding-3-small"},
            {"model": "text-embedding-3-large", "input": "x"},
            {"model": "text-embedding-3-large", "input": "x"},
            [],
            id="client-model-kept",
        ),
        pytest.param(
            {"embedding_default_model": "text-embedding-3-small", "allowed_models": ["gpt-*"]},
            {"model": "", "input": "x"},
            {"model": "text-embedding-3-small", "input": "x"},
            ["embedding_default_model"],
            id="empty-model-takes-the-default-unchecked",
        ),
        pytest.param(
            {"embedding_default_model": "embed", "model_aliases": {"embed": "text-embedding-3-small"}},
            {"input": "x"},
            {"input": "x", "model": "text-embedding-3-small"},
            ["embedding_default_model"],
            id="default-goes-through-aliases",
        ),
        pytest.param(
            {"embedding_normalize_input": True},
            {"model": "e", "input": "  hello \n\n  world\t "},
            {"model": "e", "input": "hello world"},
            ["embedding_normalize_input"],
            id="normalize-string",
        ),
        pytest.param(
            {"embedding_normalize_input": True},
            {"model": "e", "input": ["a  b", " c ", "d"]},
            {"model": "e", "input": ["a b", "c", "d"]},
            ["embedding_normalize_input"],
            id="normalize-list",
        ),
        pytest.param(
            {"embedding_normalize_input": True},
            {"model": "e", "input": [[1, 2], [3]]},
            {"model": "e", "input": [[1, 2], [3]]},
            [],
            id="token-ids-untouched",
        ),
        pytest.param(
            {"embedding_normalize_input": True},
            {"model": "e", "input": "already clean"},
            {"model": "e", "input": "already clean"},
            [],
            id="nothing-to-normalize",
        ),
    ],
)
def test_embeddings(content, body, expected, modifications):
    result = plan(content, EMBEDDINGS, body)
    assert result.body == expected
    assert result.modifications == modifications


def test_embedding_rules_leave_other_endpoints_alone():
    content = {"embedding_default_model": "e", "embedding_normalize_input": True}
    body = {"input": "  spaced   out  "}
    assert plan(content, MODERATIONS, body).body == body


# --- the user field -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "override", "client_user", "context", "expected", "modifications"),
    [
        ("leave", False, None, ALICE, None, []),
        ("leave", True, "bob", ALICE, "bob", []),
        ("key_name", False, None, ALICE, "alice-laptop", ["user:key_name"]),
        ("key_name", False, "bob", ALICE, "bob", []),  # never overwrite the client's value
        ("key_name", True, "bob", ALICE, "alice-laptop", ["user:key_name"]),
        ("client_ip", False, None, ALICE, "203.0.113.7", ["user:client_ip"]),
        ("client_ip", True, "bob", ALICE, "203.0.113.7", ["user:client_ip"]),
        ("client_ip", False, None, RequestContext(key_name="k"), None, []),  # no IP known
    ],
)
@pytest.mark.parametrize("endpoint", [CHAT, COMPLETIONS, EMBEDDINGS, IMAGES])
def test_user_field(endpoint, mode, override, client_user, context, expected, modifications):
    body = {"model": "m"} if client_user is None else {"model": "m", "user": client_user}
    result = plan({"user_field": mode, "user_field_override": override}, endpoint, body, context)
    assert result.body.get("user") == expected
    assert result.modifications == modifications


@pytest.mark.parametrize("endpoint", [MODERATIONS, AUDIO_SPEECH])
def test_user_field_only_where_openai_accepts_it(endpoint):
    assert "user" not in plan({"user_field": "key_name"}, endpoint, {"model": "m"}).body


# --- blocked patterns -----------------------------------------------------------------------

NO_SSN = {
    "blocked_patterns": [{"name": "other", "pattern": "zzz"}, {"name": "no-ssn", "pattern": r"\b\d{3}-\d{2}-\d{4}\b"}]
}
SSN = "my number is 123-45-6789"


@pytest.mark.parametrize(
    ("endpoint", "body", "param"),
    [
        pytest.param(CHAT, chat(("user", SSN)), "messages", id="chat-string"),
        pytest.param(CHAT, chat(("assistant", "ok"), ("tool", SSN)), "messages", id="chat-any-role"),
        pytest.param(
            CHAT,
            {
                "model": "m",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "https://x/1.png"}},
                            {"type": "text", "text": SSN},
                        ],
                    }
                ],
            },
            "messages",
            id="chat-text-part",
        ),
        pytest.param(COMPLETIONS, {"model": "m", "prompt": SSN}, "prompt", id="prompt"),
        pytest.param(COMPLETIONS, {"model": "m", "prompt": ["fine", SSN]}, "prompt", id="prompt-list"),
        pytest.param(EMBEDDINGS, {"model": "m", "input": SSN}, "input", id="embeddings-input"),
        pytest.param(EMBEDDINGS, {"model": "m", "input": ["fine", SSN]}, "input", id="embeddings-input-list"),
        pytest.param(MODERATIONS, {"input": SSN}, "input", id="moderation"),
        pytest.param(MODERATIONS, {"input": [{"type": "text", "text": SSN}]}, "input", id="moderation-parts"),
        pytest.param(IMAGES, {"prompt": SSN}, "prompt", id="image-prompt"),
    ],
)
def test_blocked_patterns_reject(endpoint, body, param):
    with pytest.raises(PolicyRejection) as caught:
        plan(NO_SSN, endpoint, body)
    rejection = caught.value
    assert (rejection.status, rejection.code, rejection.param) == (400, "content_policy_violation", param)
    assert rejection.message == 'The request was blocked by the content policy rule "no-ssn".'
    assert "123-45" not in rejection.message


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        (CHAT, chat(("user", "call 555-1234"))),
        (CHAT, chat(("user", "id 1234-56-7890"))),  # \b keeps it from matching inside
        (COMPLETIONS, {"model": "m", "prompt": [[1, 2, 3]]}),
        (EMBEDDINGS, {"model": "m", "input": "fine"}),
    ],
)
def test_blocked_patterns_pass_clean_text(endpoint, body):
    assert plan(NO_SSN, endpoint, body).modifications == []


def test_blocked_patterns_only_walk_the_shapes_openai_defines():
    deep: list = ["123-45-6789"]
    for _ in range(5000):
        deep = [deep]
    # Nested lists are not an input shape: they are passed on for the upstream to refuse.
    result = apply_request(make_spec(**NO_SSN), EMBEDDINGS, {"model": "m", "input": deep}, ALICE)
    assert result.body["input"] is deep


def test_blocked_patterns_check_before_the_system_context_is_added():
    content = {**NO_SSN, "system_context": "Never say 123-45-6789."}
    assert plan(content, CHAT, chat(("user", "hi"))).modifications == ["system_context:if_missing"]


def test_all_modifications_in_order():
    content = {
        "model_aliases": {"fast": "gpt-4o-mini"},
        "system_context": "Be brief.",
        "model_rules": [{"pattern": "gpt-4o-mini", "defaults": {"temperature": 0}}],
        "param_defaults": {"seed": 1},
        "param_overrides": {"max_tokens": 4096},
        "max_tokens_ceiling": 2048,
        "user_field": "key_name",
    }
    result = plan(content, CHAT, {"model": "fast", "messages": [{"role": "user", "content": "hi"}]})
    assert result.modifications == [
        "alias:fast->gpt-4o-mini",
        "system_context:if_missing",
        "model_rule:gpt-4o-mini:temperature",
        "default:seed",
        "override:max_tokens",
        "ceiling:max_tokens:4096->2048",
        "user:key_name",
    ]
    assert result.body == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        "temperature": 0,
        "seed": 1,
        "max_tokens": 2048,
        "user": "alice-laptop",
    }


# --- responses ------------------------------------------------------------------------------

SECRETS = {
    "response_redactions": [
        {"pattern": r"sk-[A-Za-z0-9]{8,}", "replacement": "[key]"},
        {"pattern": r"(?i)password: *\S+"},  # default replacement
    ]
}
NO_ANNOTATION = ResponseContext(original_model="fast", modifications=(), processing_ms=1.5)


@pytest.mark.parametrize(
    ("endpoint", "body", "expected"),
    [
        pytest.param(
            CHAT,
            {"choices": [{"index": 0, "message": {"role": "assistant", "content": "use sk-abcdefgh1234 ok"}}]},
            {"choices": [{"index": 0, "message": {"role": "assistant", "content": "use [key] ok"}}]},
            id="chat",
        ),
        pytest.param(
            CHAT,
            {
                "choices": [
                    {"index": 0, "message": {"content": "Password: hunter2"}},
                    {"index": 1, "message": {"content": None, "tool_calls": []}},
                ]
            },
            {
                "choices": [
                    {"index": 0, "message": {"content": "[redacted]"}},
                    {"index": 1, "message": {"content": None, "tool_calls": []}},
                ]
            },
            id="chat-several-choices",
        ),
        pytest.param(
            COMPLETIONS,
            {"choices": [{"index": 0, "text": "key sk-ABCDEFGH99, password: x"}]},
            {"choices": [{"index": 0, "text": "key [key], [redacted]"}]},
            id="completions",
        ),
        pytest.param(
            EMBEDDINGS,
            {"data": [{"embedding": [0.1]}], "note": "sk-abcdefgh1234"},
            {"data": [{"embedding": [0.1]}], "note": "sk-abcdefgh1234"},
            id="embeddings-untouched",
        ),
    ],
)
def test_response_redactions(endpoint, body, expected):
    before = copy.deepcopy(body)
    assert apply_response(make_spec(**SECRETS), endpoint, body, NO_ANNOTATION) == expected
    assert body == before


def test_response_without_anything_to_do_is_returned_as_is():
    body = {"choices": [{"index": 0, "message": {"content": "nothing secret"}}]}
    assert apply_response(make_spec(**SECRETS), CHAT, body, NO_ANNOTATION) is body
    assert apply_response(PASS_THROUGH, CHAT, body, NO_ANNOTATION) is body


@pytest.mark.parametrize(
    ("body", "expected_usage"),
    [
        pytest.param(
            {"id": "x", "usage": {"prompt_tokens": 3, "completion_tokens": 5}},
            {"prompt_tokens": 3, "completion_tokens": 5, "aiproxy_processing_ms": 12.5},
            id="with-usage",
        ),
        pytest.param({"id": "x"}, None, id="without-usage"),
    ],
)
@pytest.mark.parametrize("endpoint", [CHAT, COMPLETIONS, EMBEDDINGS, MODERATIONS, IMAGES])
def test_annotations(endpoint, body, expected_usage):
    spec = make_spec(annotate_responses=True, annotation_extra={"team": "search", "region": "eu"})
    context = ResponseContext(original_model="fast", modifications=("alias:fast->gpt-4o-mini",), processing_ms=12.5)
    before = copy.deepcopy(body)
    result = apply_response(spec, endpoint, body, context)
    assert body == before
    assert result["_proxy_info"] == {
        "team": "search",
        "region": "eu",
        "policy": "team-a",
        "policy_version": 3,
        "original_model": "fast",
        "modifications": ["alias:fast->gpt-4o-mini"],
        "processing_ms": 12.5,
    }
    assert result.get("usage") == expected_usage


def test_no_annotations_unless_asked_or_for_unknown_endpoints():
    body = {"id": "x", "usage": {"total_tokens": 1}}
    assert apply_response(make_spec(), CHAT, body, NO_ANNOTATION) == {"id": "x", "usage": {"total_tokens": 1}}
    assert apply_response(make_spec(annotate_responses=True), OTHER, body, NO_ANNOTATION) is body


# --- streams --------------------------------------------------------------------------------


def chat_chunk(content: str | None, finish: str | None = None, index: int = 0) -> dict:
    delta = {} if content is None else {"content": content}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-4o",
        "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
    }


def completion_chunk(text: str, finish: str | None = None) -> dict:
    return {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1700000000,
        "model": "gpt-3.5-turbo-instruct",
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
    }


def chat_texts(events: list[dict | None]) -> list[str]:
    return [e["choices"][0]["delta"].get("content", "") for e in events if e and e["choices"]]


def run_stream(spec: PolicySpec, endpoint: str, events: list[dict]) -> tuple[list[dict], list[dict]]:
    """All rewritten events and flush()'s events, checking the input events are never mutated."""
    rewriter = StreamRewriter(spec, endpoint)
    before = copy.deepcopy(events)
    out = [sent for event in events for sent in rewriter.on_event(event)]
    assert events == before
    return out, rewriter.flush()


SSN_REDACTION = make_spec(response_redactions=[{"pattern": r"\b\d{3}-\d{2}-\d{4}\b", "replacement": "[ssn]"}])


@pytest.mark.parametrize(
    ("pieces", "sent"),
    [
        pytest.param(["SSN 123-4", "5-6789 ok", ""], ["SSN ", "[ssn] ok", ""], id="split-across-2"),
        pytest.param(["SSN 12", "3-45-67", "89.", ""], ["SSN ", "", "[ssn].", ""], id="split-across-3"),
        pytest.param(["no digits here", " at all", ""], ["no digits here", " at all", ""], id="nothing-held"),
        pytest.param(["call 555-", "1234 now", ""], ["call ", "555-1234 now", ""], id="near-miss-released"),
    ],
)
def test_chat_stream_redaction_across_events(pieces, sent):
    events = [chat_chunk(p) for p in pieces[:-1]] + [chat_chunk(pieces[-1], finish="stop")]
    out, flushed = run_stream(SSN_REDACTION, CHAT, events)
    assert chat_texts(out) == sent
    assert "".join(chat_texts(out)) == "".join(sent)
    assert out[-1]["choices"][0]["finish_reason"] == "stop"
    assert flushed == []


def test_held_text_is_released_by_the_finish_reason_event_even_without_content():
    events = [chat_chunk("total: 123-45-67"), chat_chunk("89"), chat_chunk(None, finish="length")]
    out, flushed = run_stream(SSN_REDACTION, CHAT, events)
    assert chat_texts(out) == ["total: ", "", "[ssn]"]
    assert out[-1]["choices"][0] == {"index": 0, "delta": {"content": "[ssn]"}, "finish_reason": "length"}
    assert flushed == []


def test_flush_releases_text_held_when_the_stream_ends_without_finish_reason():
    out, flushed = run_stream(SSN_REDACTION, CHAT, [chat_chunk("ids 123-45-6789 and 98")])
    assert chat_texts(out) == ["ids [ssn] and "]
    assert flushed == [
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "gpt-4o",
            "choices": [{"index": 0, "delta": {"content": "98"}, "finish_reason": None}],
        }
    ]


def test_completions_stream_redaction_and_flush():
    events = [completion_chunk("a 123-"), completion_chunk("45-6789 b 1")]
    out, flushed = run_stream(SSN_REDACTION, COMPLETIONS, events)
    assert [e["choices"][0]["text"] for e in out] == ["a ", "[ssn] b "]
    assert [e["choices"][0]["text"] for e in flushed] == ["1"]
    assert flushed[0]["object"] == "text_completion"
    assert flushed[0]["id"] == "cmpl-1"


def test_each_choice_has_its_own_buffer():
    rewriter = StreamRewriter(SSN_REDACTION, CHAT)
    [first] = rewriter.on_event(
        {
            **chat_chunk(None),
            "choices": [
                {"index": 0, "delta": {"content": "a 123-45"}, "finish_reason": None},
                {"index": 1, "delta": {"content": "b 999"}, "finish_reason": None},
            ],
        }
    )
    [second] = rewriter.on_event(
        {
            **chat_chunk(None),
            "choices": [
                {"index": 1, "delta": {"content": "-99-9999 c"}, "finish_reason": "stop"},
                {"index": 0, "delta": {"content": "-6789 d"}, "finish_reason": "stop"},
            ],
        }
    )
    assert [c["delta"]["content"] for c in first["choices"]] == ["a ", "b "]
    assert [c["delta"]["content"] for c in second["choices"]] == ["[ssn] c", "[ssn] d"]
    assert rewriter.flush() == []


def test_a_long_possible_match_is_held_whole_not_leaked():
    spec = make_spec(response_redactions=[{"pattern": r"(?i)[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}"}])
    rewriter = StreamRewriter(spec, CHAT)
    sent = []
    # One long "word": every part of it could still be the start of an e-mail address.
    for _ in range(200):
        sent += chat_texts(rewriter.on_event(chat_chunk("abcdefghij")))
    assert "".join(sent) == ""
    assert chat_texts(rewriter.flush()) == ["abcdefghij" * 200]


PEM = "-----BEGIN PRIVATE KEY-----\n" + "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n" * 40 + "-----END PRIVATE KEY-----"
PEM_REDACTION = [{"pattern": r"-----BEGIN [A-Z ]+-----[\s\S]*?-----END [A-Z ]+-----", "replacement": "[key]"}]


@pytest.mark.parametrize("piece", [1, 7, 64])
def test_a_stream_never_shows_what_the_json_answer_redacts_however_long_the_match(piece):
    spec = make_spec(response_redactions=PEM_REDACTION)
    text = f"here: {PEM} done"
    pieces = [text[i : i + piece] for i in range(0, len(text), piece)]

    out, flushed = run_stream(spec, CHAT, [chat_chunk(p) for p in pieces] + [chat_chunk("", finish="stop")])

    streamed = "".join(chat_texts(out) + chat_texts(flushed))
    assert len(PEM) > STREAM_HOLD_LIMIT
    assert streamed == redact_text(spec.response_redactions, text) == "here: [key] done"


def test_a_hold_past_its_bound_fails_closed():
    rewriter = StreamRewriter(make_spec(response_redactions=PEM_REDACTION), CHAT, hold_max=300)
    events = [chat_chunk("intro -----BEGIN PRIVATE KEY-----")] + [chat_chunk("A" * 50) for _ in range(20)]
    events.append(chat_chunk(" -----END PRIVATE KEY----- after", finish="stop"))

    streamed = "".join(text for event in events for text in chat_texts(rewriter.on_event(event)))

    assert streamed == "intro [key]"
    assert "AAAA" not in streamed
    assert rewriter.flush() == []


def test_stream_holds_only_what_could_begin_a_match():
    spec = make_spec(response_redactions=[{"pattern": r"sk-[A-Za-z0-9]{8,}", "replacement": "[key]"}])
    out, flushed = run_stream(spec, CHAT, [chat_chunk("the key is s"), chat_chunk("k-abcdefgh12 done")])
    # "the key is " cannot begin "sk-...": only the trailing "s" was held.
    assert chat_texts(out) == ["the key is ", "[key] done"]
    assert flushed == []


def test_stream_applies_redactions_in_order():
    spec = make_spec(
        response_redactions=[
            {"pattern": "cat", "replacement": "dog"},
            {"pattern": "dog", "replacement": "[pet]"},
        ]
    )
    out, flushed = run_stream(spec, CHAT, [chat_chunk("a c"), chat_chunk("at"), chat_chunk(".", finish="stop")])
    assert "".join(chat_texts(out)) == "a [pet]."


def test_events_without_text_pass_through_unchanged():
    rewriter = StreamRewriter(SSN_REDACTION, CHAT)
    role = chat_chunk(None)
    role["choices"][0]["delta"] = {"role": "assistant"}
    usage = {**chat_chunk(None), "choices": [], "usage": {"total_tokens": 3}}
    assert rewriter.on_event(role)[0] is role
    assert rewriter.on_event(usage)[0] is usage


@pytest.mark.parametrize(
    ("content", "endpoint", "needed"),
    [
        ({}, CHAT, False),
        ({"annotate_responses": True}, CHAT, False),
        (SECRETS, CHAT, True),
        (SECRETS, COMPLETIONS, True),
        (SECRETS, EMBEDDINGS, False),
        (SECRETS, OTHER, False),
    ],
)
def test_stream_needs_rewrite(content, endpoint, needed):
    assert stream_needs_rewrite(make_spec(**content), endpoint) is needed


def test_stream_without_redactions_returns_each_event_itself():
    rewriter = StreamRewriter(make_spec(annotate_responses=True), CHAT)
    event = chat_chunk("123-45-6789")
    assert rewriter.on_event(event)[0] is event
    assert rewriter.flush() == []


STREAM_PATTERNS = [
    [{"pattern": r"\b\d{3}-\d{2}-\d{4}\b", "replacement": "[ssn]"}],
    [{"pattern": r"sk-[A-Za-z0-9]{8,}", "replacement": "[key]"}],
    [{"pattern": r"(?i)[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}", "replacement": "[email]"}],
    [{"pattern": r"colou?r|cats"}, {"pattern": r"\d+", "replacement": "#"}],
    [{"pattern": r"(ab)+c", "replacement": r"<\1>"}],
    [{"pattern": r"@\w+"}],
]
STREAM_WORDS = [*"abcxo0123456789- @.:sk_\n", "sk-", "cats", "color", "123-45-6789", "bob@ex.com", "abab"]


@pytest.mark.parametrize("seed", range(6))
def test_a_stream_however_split_reads_like_the_whole_answer_redacted(seed):
    rng = random.Random(seed)
    for _ in range(100):
        spec = make_spec(response_redactions=rng.choice(STREAM_PATTERNS))
        text = "".join(rng.choice(STREAM_WORDS) for _ in range(rng.randint(0, 120)))
        cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, rng.randint(0, 12))))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        finish = rng.random() < 0.5
        events = [
            chat_chunk(p, finish="stop" if finish and i == len(pieces) - 1 else None) for i, p in enumerate(pieces)
        ]
        out, flushed = run_stream(spec, CHAT, events)
        assert "".join(chat_texts(out) + chat_texts(flushed)) == redact_text(spec.response_redactions, text)
        assert len(out) == len(events)


# --- partial matching (which tail a stream must hold) ---------------------------------------


@pytest.mark.parametrize(
    ("pattern", "text", "open_start"),
    [
        (r"\b\d{3}-\d{2}-\d{4}\b", "my ssn 12", 7),
        (r"\b\d{3}-\d{2}-\d{4}\b", "my ssn is", None),
        (r"\b\d{3}-\d{2}-\d{4}\b", "x 123-45-6789", 2),  # complete, but a next digit would undo \b
        (r"\b\d{3}-\d{2}-\d{4}\b", "x 123-45-6789 y", None),
        (r"sk-\w+", "a sk-abc", 2),  # complete, but may still grow
        (r"sk-\w+", "ask me", None),
        (r"sk-\w+", "task s", 5),
        (r"(?i)SECRET", "the sec", 4),
        (r"(?i)SECRET", "the sex", None),
        (r"colou?r", "a colo", 2),
        (r"a{3,5}", "baa", 1),
        (r"x[^0-9]y", "x1", None),
        (r"x[^0-9]y", "xz", 0),
        (r"(x)\1", "say x", 4),  # a backreference: assume anything
        (r"foo(?=bar)", "a foo", 2),  # a lookahead at the end: needs the next text
        (r"(?s)a.b", "a\n", 0),
        (r"a.b", "a\n", None),
    ],
)
def test_prefix_matcher(pattern, text, open_start):
    assert prefix_matcher(pattern).open_start(text, 0) == open_start


@pytest.mark.parametrize(
    ("pattern", "text", "more"),
    [
        (r"\b\d{3}-\d{2}-\d{4}\b", "ssn: 1", "23-45-6789 ok"),
        (r"\b\d{3}-\d{2}-\d{4}\b", "ssn: 123-45-678", "9"),
        (r"sk-[A-Za-z0-9]{8,}", "key: sk-ab", "cdefgh12"),
        (r"(?i)password: *\S+", "PassW", "ord: hunter2"),
        (r"[a-z0-9.]+@[a-z0-9.]+\.[a-z]{2,}", "mail me at bob.smi", "th@example.com"),
        (r"(?:ab|a)c{2}", "xa", "bcc"),
    ],
)
def test_prefix_matcher_never_misses_a_match_that_more_text_completes(pattern, text, more):
    open_start = prefix_matcher(pattern).open_start(text, 0)
    full = text + more
    unsettled = [m.start() for m in re.finditer(pattern, full) if m.end() > len(text)]
    assert unsettled, "the example must have a match that needs the later text"
    assert open_start is not None
    assert open_start <= min(unsettled)


def prefix_matcher(pattern: str) -> PrefixMatcher:
    # Built directly: the analysis also stays safe for syntax RE2 refuses (backreferences, lookaround).
    matcher = PrefixMatcher.build(pattern)
    assert matcher is not None
    return matcher


# --- cost -----------------------------------------------------------------------------------


def test_a_policy_with_everything_off_does_nothing_to_a_request():
    body = chat(("system", "s"), ("user", "u"), temperature=0.5, max_tokens=10, user="bob")
    result = apply_request(PASS_THROUGH, CHAT, body, ALICE)
    assert result.body == body
    assert result.body["messages"] is body["messages"]  # nothing copied that did not change
    assert result.modifications == []


@pytest.mark.parametrize(
    "message",
    [
        {"role": "user", "name": "TOPSECRET", "content": "Hi"},
        {"role": "tool", "tool_call_id": "c1", "content": "TOPSECRET"},
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"q": "TOPSECRET"}'}}
            ],
        },
    ],
    ids=["participant-name", "tool-result", "tool-call-arguments"],
)
def test_blocked_patterns_see_every_text_the_model_reads(message):
    content = {"blocked_patterns": [{"name": "secret", "pattern": "TOPSECRET"}]}

    with pytest.raises(PolicyRejection) as caught:
        plan(content, CHAT, {"model": "gpt-4o", "messages": [message]})

    assert caught.value.code == "content_policy_violation"
