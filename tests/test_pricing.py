"""What a request costs, as policies.pricing reckons it.

- usage_from reads the usage every surface reports, in its own words: OpenAI chat and embeddings
  (prompt_tokens, completion_tokens, prompt_tokens_details.cached_tokens), the Responses API
  (input_tokens, output_tokens, input_tokens_details.cached_tokens), Anthropic Messages (input_tokens,
  output_tokens, and cache reads and writes, which Anthropic counts apart from input_tokens: all of them are
  prompt, the reads are the cached ones). An answer without usage has none; nonsense counts are ignored.
- PriceTable.price_for: the pattern with the most literal characters wins; no pattern, no price.
- cost_of: uncached input, cached input and output, each at its own rate per million, to the nano-dollar.
"""

from decimal import Decimal

import pytest

from policies.pricing import Price, PriceTable, Usage, cost_of, estimated_tokens, usage_from

# --- usage_from: each surface's words --------------------------------------------------------------------


def test_openai_chat_usage_gives_prompt_completion_and_cached_tokens():
    body = {
        "object": "chat.completion",
        "model": "gpt-4o-2024-08-06",
        "usage": {
            "prompt_tokens": 2006,
            "completion_tokens": 300,
            "total_tokens": 2306,
            "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
    }

    assert usage_from(body) == Usage(prompt_tokens=2006, completion_tokens=300, cached_tokens=1920)


def test_openai_chat_usage_without_details_has_no_cached_tokens():
    body = {"usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29}}

    assert usage_from(body) == Usage(prompt_tokens=19, completion_tokens=10, cached_tokens=0)


def test_responses_api_usage_gives_input_output_and_cached_tokens():
    body = {
        "object": "response",
        "status": "completed",
        "usage": {
            "input_tokens": 1536,
            "input_tokens_details": {"cached_tokens": 1024},
            "output_tokens": 87,
            "output_tokens_details": {"reasoning_tokens": 64},
            "total_tokens": 1623,
        },
    }

    assert usage_from(body) == Usage(prompt_tokens=1536, completion_tokens=87, cached_tokens=1024)


def test_anthropic_cache_reads_and_writes_count_as_prompt_and_the_reads_are_the_cached_tokens():
    body = {
        "type": "message",
        "role": "assistant",
        "usage": {
            "input_tokens": 50,
            "cache_creation_input_tokens": 1000,
            "cache_read_input_tokens": 2000,
            "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 0},
            "output_tokens": 393,
            "service_tier": "standard",
        },
    }

    assert usage_from(body) == Usage(prompt_tokens=3050, completion_tokens=393, cached_tokens=2000)


def test_anthropic_usage_without_cache_activity_is_its_input_and_output_tokens():
    body = {
        "type": "message",
        "usage": {
            "input_tokens": 21,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 5,
        },
    }

    assert usage_from(body) == Usage(prompt_tokens=21, completion_tokens=5, cached_tokens=0)


def test_anthropic_cache_writes_alone_are_prompt_but_not_cached():
    body = {"usage": {"input_tokens": 4, "cache_creation_input_tokens": 2048, "output_tokens": 12}}

    assert usage_from(body) == Usage(prompt_tokens=2052, completion_tokens=12, cached_tokens=0)


def test_embeddings_usage_is_all_prompt():
    body = {"object": "list", "model": "text-embedding-3-small", "usage": {"prompt_tokens": 8, "total_tokens": 8}}

    assert usage_from(body) == Usage(prompt_tokens=8, completion_tokens=0, cached_tokens=0)


def test_total_tokens_are_prompt_plus_completion_tokens():
    assert Usage(prompt_tokens=2006, completion_tokens=300, cached_tokens=1920).total_tokens == 2306


@pytest.mark.parametrize(
    "body",
    [
        None,
        "a plain text answer",
        [{"usage": {"prompt_tokens": 1}}],
        {},
        {"id": "chatcmpl-1", "choices": []},
        {"usage": None},
        {"usage": [19, 10]},
        {"usage": "19 tokens"},
        {"usage": {}},
        {"usage": {"total_tokens": 29}},
    ],
    ids=repr,
)
def test_an_answer_that_reports_no_usage_has_none(body):
    assert usage_from(body) is None


NONSENSE_COUNTS = [-1, True, False, "12", 12.0, None, [12], {"n": 12}, 2**31, 10**30]


@pytest.mark.parametrize("bad", NONSENSE_COUNTS, ids=repr)
def test_a_nonsense_count_is_ignored_and_the_sane_one_kept(bad):
    assert usage_from({"usage": {"prompt_tokens": bad, "completion_tokens": 5}}) == Usage(0, 5, 0)
    assert usage_from({"usage": {"input_tokens": 7, "output_tokens": bad}}) == Usage(7, 0, 0)


@pytest.mark.parametrize("bad", NONSENSE_COUNTS, ids=repr)
def test_usage_with_only_nonsense_counts_is_none(bad):
    assert usage_from({"usage": {"prompt_tokens": bad, "completion_tokens": bad}}) is None


def test_the_largest_count_a_record_can_hold_is_kept():
    assert usage_from({"usage": {"prompt_tokens": 2**31 - 1, "completion_tokens": 0}}) == Usage(2**31 - 1, 0, 0)


@pytest.mark.parametrize("bad", NONSENSE_COUNTS, ids=repr)
def test_a_nonsense_cached_count_counts_as_none_cached(bad):
    chat = {"usage": {"prompt_tokens": 100, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": bad}}}
    anthropic = {"usage": {"input_tokens": 100, "output_tokens": 5, "cache_read_input_tokens": bad}}

    assert usage_from(chat) == Usage(100, 5, 0)
    assert usage_from(anthropic) == Usage(100, 5, 0)


@pytest.mark.parametrize("details", [None, "1920", [1920], 1920], ids=repr)
def test_token_details_that_are_not_an_object_count_as_none_cached(details):
    body = {"usage": {"prompt_tokens": 100, "completion_tokens": 5, "prompt_tokens_details": details}}

    assert usage_from(body) == Usage(100, 5, 0)


def test_cached_tokens_never_exceed_the_prompt_tokens():
    body = {"usage": {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 50}}}

    assert usage_from(body) == Usage(prompt_tokens=10, completion_tokens=5, cached_tokens=10)


# --- PriceTable.price_for: the most specific pattern wins -----------------------------------------------


def price(pattern: str, input_rate="1", cached_rate="0.5", output_rate="2", id=1) -> Price:  # noqa: A002
    return Price(
        id=id,
        pattern=pattern,
        input_per_million=Decimal(input_rate),
        cached_input_per_million=Decimal(cached_rate),
        output_per_million=Decimal(output_rate),
    )


PATTERNS = ["*", "gpt-4o*", "gpt-4o-mini*", "gpt-4o-mini-2024-07-18", "claude-*", "claude-sonnet-4*"]


@pytest.mark.parametrize("order", ["as written", "reversed"])
@pytest.mark.parametrize(
    ("model", "winner"),
    [
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini-2024-07-18"),
        ("gpt-4o-mini-2024-09-01", "gpt-4o-mini*"),
        ("gpt-4o-mini", "gpt-4o-mini*"),
        ("gpt-4o-2024-08-06", "gpt-4o*"),
        ("gpt-4o", "gpt-4o*"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4*"),
        ("claude-3-5-haiku-latest", "claude-*"),
        ("mistral-large", "*"),
    ],
)
def test_the_pattern_with_the_most_literal_characters_wins_whatever_the_row_order(model, winner, order):
    patterns = PATTERNS if order == "as written" else PATTERNS[::-1]
    table = PriceTable([price(pattern, id=n) for n, pattern in enumerate(patterns)])

    assert table.price_for(model).pattern == winner


def test_an_exact_name_prices_only_that_model():
    table = PriceTable([price("gpt-4o")])

    assert table.price_for("gpt-4o").pattern == "gpt-4o"
    assert table.price_for("gpt-4o-mini") is None
    assert table.price_for("openai/gpt-4o") is None


def test_an_exact_name_beats_a_glob_that_matches_it():
    table = PriceTable([price("gpt-4o*", input_rate="9"), price("gpt-4o", input_rate="2.5")])

    assert table.price_for("gpt-4o").input_per_million == Decimal("2.5")


def test_patterns_are_case_sensitive():
    assert PriceTable([price("gpt-4o*")]).price_for("GPT-4o") is None


def test_an_unknown_model_has_no_price():
    table = PriceTable([price("gpt-4o*"), price("claude-*")])

    assert table.price_for("mistral-large") is None
    assert table.price_for("mistral-large") is None  # asked again: still none


@pytest.mark.parametrize("model", [None, ""])
def test_no_model_has_no_price_even_under_a_catch_all(model):
    assert PriceTable([price("*")]).price_for(model) is None


def test_an_empty_table_prices_nothing():
    assert PriceTable().price_for("gpt-4o") is None


# --- cost_of: each kind of token at its own rate, to the nano-dollar --------------------------------------

GPT_4O = price("gpt-4o", input_rate="2.50", cached_rate="1.25", output_rate="10.00")


def test_the_cost_is_uncached_input_cached_input_and_output_each_at_its_rate():
    usage = Usage(prompt_tokens=2000, completion_tokens=400, cached_tokens=1500)

    # 500 uncached x $2.50 + 1500 cached x $1.25 + 400 output x $10.00, per million tokens.
    assert cost_of(usage, GPT_4O) == Decimal("0.007125")


@pytest.mark.parametrize(
    ("usage", "cost"),
    [
        (Usage(prompt_tokens=1_000_000, completion_tokens=0, cached_tokens=0), Decimal("2.50")),
        (Usage(prompt_tokens=1_000_000, completion_tokens=0, cached_tokens=1_000_000), Decimal("1.25")),
        (Usage(prompt_tokens=0, completion_tokens=1_000_000, cached_tokens=0), Decimal("10.00")),
    ],
    ids=["uncached input", "cached input", "output"],
)
def test_a_million_tokens_of_one_kind_cost_exactly_its_rate(usage, cost):
    assert cost_of(usage, GPT_4O) == cost


def test_no_tokens_cost_nothing():
    assert cost_of(Usage(0, 0, 0), GPT_4O) == 0


@pytest.mark.parametrize(
    ("usage", "rate", "cost"),
    [
        (Usage(prompt_tokens=3, completion_tokens=0), "0.0007", "0.000000002"),  # $0.0000000021
        (Usage(prompt_tokens=1, completion_tokens=0), "0.0004", "0.000000000"),  # $0.0000000004
        (Usage(prompt_tokens=1, completion_tokens=0), "0.0009", "0.000000001"),  # $0.0000000009
        (Usage(prompt_tokens=123_457, completion_tokens=0), "0.15", "0.018518550"),  # $0.01851855
    ],
)
def test_the_cost_is_quantized_to_the_nano_dollar(usage, rate, cost):
    result = cost_of(usage, price("cheap", input_rate=rate))

    assert result == Decimal(cost)
    assert result.as_tuple().exponent == -9


def test_an_estimate_of_tokens_rounds_a_partial_token_up():
    assert [estimated_tokens(chars) for chars in (0, 1, 4, 5, 8)] == [0, 1, 1, 2, 2]


def test_question_marks_and_character_classes_are_not_literal_characters():
    """ "gpt-????*" has 4 literal characters and "gpt-[34]*" 4: "gpt-4o*" (6) is the more specific."""
    for vague in ("gpt-????*", "gpt-[34]*"):
        table = PriceTable([price(vague, "1"), price("gpt-4o*", "2")])
        assert table.price_for("gpt-4o-mini").pattern == "gpt-4o*", vague
