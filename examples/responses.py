"""The Responses API through aiproxy with the OpenAI SDK: one answer, then a streamed follow-up that builds on it.

Env: AIPROXY_API_KEY (required), AIPROXY_BASE_URL (default http://127.0.0.1:8000), AIPROXY_MODEL (default gpt-4o-mini).
"""

import os

from openai import OpenAI

client = OpenAI(
    base_url=os.environ.get("AIPROXY_BASE_URL", "http://127.0.0.1:8000") + "/v1",
    api_key=os.environ["AIPROXY_API_KEY"],
)
model = os.environ.get("AIPROXY_MODEL", "gpt-4o-mini")

first = client.responses.create(model=model, input="Name one use of an API gateway.")
print(first.output_text)

# previous_response_id works only with this key's own responses: aiproxy answers 404 for anyone else's.
stream = client.responses.create(model=model, input="And another?", previous_response_id=first.id, stream=True)
for event in stream:
    if event.type == "response.output_text.delta":
        print(event.delta, end="", flush=True)
print()
print(f"response ids: {first.id}")
