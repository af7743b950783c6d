"""A chat completion through aiproxy with the OpenAI SDK, and the request id to find it in the audit log.

Env: AIPROXY_API_KEY (required), AIPROXY_BASE_URL (default http://127.0.0.1:8000), AIPROXY_MODEL (default gpt-4o-mini).
"""

import os

from openai import OpenAI

client = OpenAI(
    base_url=os.environ.get("AIPROXY_BASE_URL", "http://127.0.0.1:8000") + "/v1",
    api_key=os.environ["AIPROXY_API_KEY"],
)

# with_raw_response exposes the headers: aiproxy's request id is the audit record's request_id.
raw = client.chat.completions.with_raw_response.create(
    model=os.environ.get("AIPROXY_MODEL", "gpt-4o-mini"),
    messages=[
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "What does an API gateway do?"},
    ],
)
reply = raw.parse()
print(reply.choices[0].message.content)
print(f"request id: {raw.headers['x-request-id']}, policy: {raw.headers.get('x-aiproxy-policy', '(none)')}")
if reply.usage:
    print(f"tokens: {reply.usage.prompt_tokens} in, {reply.usage.completion_tokens} out")
