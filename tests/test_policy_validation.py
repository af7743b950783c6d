"""Policy content validation: what an operator is told about each kind of mistake."""

import pytest

from policies.spec import DEFAULT_CONTENT, PolicySpec
from policies.validation import CHECKS, validate_policy_content

EVERYTHING = {
    "system_context": "You are the support assistant of Example Corp.",
    "system_context_mode": "replace",
    "param_defaults": {"temperature": 0.3, "stop": ["###"]},
    "param_overrides": {"max_tokens": 2048, "response_format": {"type": "text"}},
    "model_rules": [{"pattern": "gpt-4*", "defaults": {"temperature": 0.2}}, {"pattern": "o[13]-*", "defaults": {}}],
    "max_tokens_ceiling": 4096,
    "allowed_models": ["gpt-4o*", "openai/gpt-4.1", "text-embedding-3-[sl]*", "[!x]*"],
    "model_aliases": {"fast": "gpt-4o-mini", "smart": "openai/o3"},
    "allowed_surfaces": ["chat", "responses", "messages", "models"],
    "passthrough_paths": ["/v1/files", "/v1/files/*", "/v1/batches/batch_[0-9]*"],
    "embedding_default_model": "text-embedding-3-small",
    "embedding_normalize_input": True,
    "user_field": "key_name",
    "user_field_override": True,
    "blocked_patterns": [{"name": "no-ssn", "pattern": r"\b\d{3}-\d{2}-\d{4}\b"}],
    "response_redactions": [
        {"pattern": r"sk-(?P<tail>\w{4})\w+", "replacement": r"sk-\g<tail>…"},
        {"pattern": r"(?i)password: *\S+"},
    ],
    "annotate_responses": True,
    "annotation_extra": {"team": "support", "cost_center": 42},
    "audit_capture": "metadata",
    "audit_retention_days": 90,
}


@pytest.mark.parametrize("content", [{}, DEFAULT_CONTENT, EVERYTHING], ids=["empty", "defaults", "everything"])
def test_valid_content_has_no_errors_and_builds_a_spec(content):
    assert validate_policy_content(content) == {}
    PolicySpec.from_content(name="p", version=1, content=content)


def test_every_setting_has_a_check():
    assert CHECKS.keys() == DEFAULT_CONTENT.keys()


def test_content_must_be_an_object():
    assert validate_policy_content(["not", "a", "dict"]) == {"__all__": ["Policy content must be a JSON object."]}


@pytest.mark.parametrize(
    ("content", "field", "messages"),
    [
        # unknown keys, with a hint for typos
        (
            {"max_token_ceiling": 5},
            "max_token_ceiling",
            ['"max_token_ceiling" is not a policy setting. Did you mean "max_tokens_ceiling"?'],
        ),
        ({"colour": "blue"}, "colour", ['"colour" is not a policy setting.']),
        # surfaces and passthrough paths
        ({"allowed_surfaces": "chat"}, "allowed_surfaces", ["allowed_surfaces must be a list of surface names."]),
        (
            {"allowed_surfaces": ["chat", "files"]},
            "allowed_surfaces",
            [
                'allowed_surfaces[1] "files" is not a surface; choose from "chat", "completions", "responses", '
                '"messages", "embeddings", "moderations", "images", "audio", "models".'
            ],
        ),
        (
            {"passthrough_paths": ["files/*", "/v1/", "/v1/files?x=1", "/v1/[oops"]},
            "passthrough_paths",
            [
                'passthrough_paths[0] must be a path under /v1/, such as "/v1/files" (got "files/*").',
                'passthrough_paths[1] must be a path under /v1/, such as "/v1/files" (got "/v1/").',
                "passthrough_paths[2] must be a plain path: no spaces, query, fragment or percent-encoding.",
                "passthrough_paths[3] has a '[' that is never closed.",
            ],
        ),
        # scalars and enums
        ({"system_context": 42}, "system_context", ["system_context must be a string."]),
        (
            {"system_context_mode": "append"},
            "system_context_mode",
            ['system_context_mode must be one of "if_missing", "prepend", "replace" (got "append").'],
        ),
        (
            {"user_field": "email"},
            "user_field",
            ['user_field must be one of "leave", "key_name", "client_ip" (got "email").'],
        ),
        ({"audit_capture": None}, "audit_capture", ['audit_capture must be one of "full", "metadata" (got null).']),
        ({"user_field_override": "yes"}, "user_field_override", ["user_field_override must be true or false."]),
        (
            {"embedding_normalize_input": 1},
            "embedding_normalize_input",
            ["embedding_normalize_input must be true or false."],
        ),
        ({"annotate_responses": None}, "annotate_responses", ["annotate_responses must be true or false."]),
        # positive integers
        (
            {"max_tokens_ceiling": 0},
            "max_tokens_ceiling",
            ["max_tokens_ceiling must be a positive integer or null (got 0)."],
        ),
        (
            {"max_tokens_ceiling": -5},
            "max_tokens_ceiling",
            ["max_tokens_ceiling must be a positive integer or null (got -5)."],
        ),
        (
            {"max_tokens_ceiling": 10.5},
            "max_tokens_ceiling",
            ["max_tokens_ceiling must be a positive integer or null (got 10.5)."],
        ),
        (
            {"max_tokens_ceiling": True},
            "max_tokens_ceiling",
            ["max_tokens_ceiling must be a positive integer or null (got true)."],
        ),
        (
            {"audit_retention_days": "30"},
            "audit_retention_days",
            ['audit_retention_days must be a positive integer or null (got "30").'],
        ),
        # parameters: shapes, and never what is asked
        ({"param_defaults": [1]}, "param_defaults", ["param_defaults must be an object of request parameters."]),
        ({"param_defaults": {"": 1}}, "param_defaults", ["param_defaults has an empty parameter name."]),
        (
            {"param_overrides": {"model": "gpt-4o", "stream": False}},
            "param_overrides",
            [
                "param_overrides.model cannot be set by a policy: defaults and overrides may change how a request "
                "is answered, not what is asked.",
                "param_overrides.stream cannot be set by a policy: defaults and overrides may change how a request "
                "is answered, not what is asked.",
            ],
        ),
        # model rules
        (
            {"model_rules": {"gpt-4*": {}}},
            "model_rules",
            ['model_rules must be a list of {"pattern": ..., "defaults": {...}} objects.'],
        ),
        (
            {"model_rules": ["gpt-4*"]},
            "model_rules",
            ['model_rules[0] must be an object with "pattern" and "defaults".'],
        ),
        (
            {"model_rules": [{"pattern": "gpt-4*", "defaults": {}}, {"pattern": "", "defaults": {}}]},
            "model_rules",
            ["model_rules[1].pattern must not be empty."],
        ),
        (
            {"model_rules": [{"pattern": "gpt-4*", "defaults": {"messages": []}, "priority": 1}]},
            "model_rules",
            [
                'model_rules[0] has an unexpected key "priority" (expected "pattern", "defaults").',
                "model_rules[0].defaults.messages cannot be set by a policy: defaults and overrides may change how a "
                "request is answered, not what is asked.",
            ],
        ),
        (
            {"model_rules": [{"pattern": "gpt-4*"}]},
            "model_rules",
            ["model_rules[0].defaults must be an object of request parameters."],
        ),
        # globs: model names may contain "/", but must be sane
        ({"allowed_models": "gpt-4o"}, "allowed_models", ["allowed_models must be a list of model name patterns."]),
        (
            {"allowed_models": ["gpt-4o", "   ", " gpt-4o", "gpt-[4", "gpt-4]", "a\x07b", "x" * 201, 7]},
            "allowed_models",
            [
                "allowed_models[1] must not be empty.",
                "allowed_models[2] must not start or end with whitespace.",
                "allowed_models[3] has a '[' that is never closed.",
                "allowed_models[4] has a ']' without a matching '['.",
                "allowed_models[5] must not contain control characters.",
                "allowed_models[6] must be at most 200 characters.",
                "allowed_models[7] must be a string.",
            ],
        ),
        # aliases
        (
            {"model_aliases": ["fast"]},
            "model_aliases",
            ["model_aliases must be an object mapping alias names to upstream model names."],
        ),
        (
            {"model_aliases": {"": "gpt-4o", "fast": "", "slow": None}},
            "model_aliases",
            [
                'model_aliases: alias name "" must not be empty.',
                'model_aliases["fast"] target must not be empty.',
                'model_aliases["slow"] target must be a string.',
            ],
        ),
        (
            {"model_aliases": {"fast": "quick", "quick": "gpt-4o-mini"}},
            "model_aliases",
            [
                'model_aliases["fast"] points to "quick", which is itself an alias: aliases are resolved once, '
                "point it at the upstream model directly."
            ],
        ),
        (
            {"embedding_default_model": " e"},
            "embedding_default_model",
            ["embedding_default_model must not start or end with whitespace."],
        ),
        # blocked patterns
        (
            {"blocked_patterns": [{"name": "cards", "pattern": "[abc"}]},
            "blocked_patterns",
            ["blocked_patterns[0].pattern is not a valid regular expression: missing ]: [abc."],
        ),
        (
            {"blocked_patterns": [{"name": "x", "pattern": "ok"}, {"name": "bad", "pattern": "a(b"}]},
            "blocked_patterns",
            ["blocked_patterns[1].pattern is not a valid regular expression: missing ): a(b."],
        ),
        (
            {"blocked_patterns": [{"name": "anything", "pattern": "x*"}]},
            "blocked_patterns",
            ["blocked_patterns[0].pattern matches empty text, so it would match everywhere."],
        ),
        (
            {"blocked_patterns": [{"pattern": "ssn"}, {"name": "a", "pattern": "x"}, {"name": "a", "pattern": "y"}]},
            "blocked_patterns",
            [
                "blocked_patterns[0].name must be a non-empty string: rejections quote it.",
                'blocked_patterns[2].name "a" is already used by blocked_patterns[1].',
            ],
        ),
        (
            {"blocked_patterns": [{"name": "a", "pattern": ""}]},
            "blocked_patterns",
            ["blocked_patterns[0].pattern must be a non-empty regular expression."],
        ),
        (
            {"blocked_patterns": "ssn"},
            "blocked_patterns",
            ['blocked_patterns must be a list of {"name": ..., "pattern": ...} objects.'],
        ),
        # response redactions
        (
            {"response_redactions": [{"pattern": "(secret"}]},
            "response_redactions",
            ["response_redactions[0].pattern is not a valid regular expression: missing ): (secret."],
        ),
        # what RE2 does not run: refused by name, with the reason
        (
            {"blocked_patterns": [{"name": "twice", "pattern": r"(\w)\1"}]},
            "blocked_patterns",
            [
                "blocked_patterns[0].pattern uses a backreference (\\1, (?P=name)), which aiproxy does not run: "
                "patterns are matched with RE2, in time linear in the text, so that no pattern can stall a worker."
            ],
        ),
        (
            {"response_redactions": [{"pattern": r"(?<=@)\w+"}]},
            "response_redactions",
            [
                "response_redactions[0].pattern uses a lookahead or lookbehind ((?=, (?!, (?<=, (?<!), which aiproxy "
                "does not run: patterns are matched with RE2, in time linear in the text, so that no pattern can "
                "stall a worker."
            ],
        ),
        (
            {"response_redactions": [{"pattern": r"(a)(b)", "replacement": r"\3"}]},
            "response_redactions",
            ["response_redactions[0].replacement is not a valid replacement: invalid group reference 3 at position 1"],
        ),
        (
            {"response_redactions": [{"pattern": r"(?P<x>a)", "replacement": r"\g<y>"}]},
            "response_redactions",
            ["response_redactions[0].replacement is not a valid replacement: unknown group name 'y'"],
        ),
        (
            {"response_redactions": [{"pattern": "a", "replacement": 5, "flags": "i"}]},
            "response_redactions",
            [
                'response_redactions[0] has an unexpected key "flags" (expected "pattern", "replacement").',
                "response_redactions[0].replacement must be a string.",
            ],
        ),
        # annotations
        ({"annotation_extra": ["team"]}, "annotation_extra", ["annotation_extra must be an object."]),
        (
            {"annotation_extra": {"team": "a", "policy": "b"}},
            "annotation_extra",
            [
                "annotation_extra.policy clashes with a key aiproxy sets itself; reserved: policy, policy_version, "
                "original_model, modifications, processing_ms."
            ],
        ),
    ],
)
def test_invalid_content(content, field, messages):
    assert validate_policy_content(content) == {field: messages}


def test_every_field_with_a_problem_is_reported_at_once():
    errors = validate_policy_content(
        {"max_tokens_ceiling": -1, "user_field": "nope", "allowed_models": [""], "system_context": "fine"}
    )
    assert sorted(errors) == ["allowed_models", "max_tokens_ceiling", "user_field"]
