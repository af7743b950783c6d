"""An operator's pattern runs in linear time: no blocked pattern or redaction can freeze a worker."""

import httpx
import pytest

from policies.models import Policy

pytestmark = pytest.mark.django_db(transaction=True)

# Each takes exponential time in a backtracking engine on the texts below: minutes, not microseconds.
NESTED_A = r"(a+)+$"
NESTED_B = r"(b+)+$"


def chat(live, key: str, content: str, *, answer: str = "Hello", stream: bool = False) -> httpx.Response:
    # A timeout well below what a backtracking engine needs: a frozen worker fails the test.
    return httpx.post(
        live.url + "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": content}], "stream": stream},
        headers={"Authorization": f"Bearer {key}", "x-fake-content": answer},
        timeout=5,
    )


def test_a_nested_quantifier_in_a_blocked_pattern_answers_at_once(live, make_key):
    key = make_key("app", policy=Policy.objects.create(name="p", blocked_patterns=[{"name": "n", "pattern": NESTED_A}]))

    passed = chat(live, key, "a" * 40 + "!")
    blocked = chat(live, key, "a" * 40)

    assert passed.status_code == 200
    assert blocked.json()["error"]["code"] == "content_policy_violation"


@pytest.mark.parametrize("stream", [False, True])
def test_a_nested_quantifier_in_a_redaction_hit_by_model_output_answers_at_once(live, make_key, stream):
    policy = Policy.objects.create(name="p", response_redactions=[{"pattern": NESTED_B, "replacement": "[b]"}])
    key = make_key("app", policy=policy)

    near_miss = chat(live, key, "Hi", answer="b" * 27 + "!", stream=stream)
    hit = chat(live, key, "Hi", answer="b" * 27, stream=stream)

    assert "b" * 27 + "!" in near_miss.text
    assert "[b]" in hit.text
    assert "bbb" not in hit.text
