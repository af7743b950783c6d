"""A streamed chat completion through aiproxy: tokens are printed as they arrive.

Env: AIPROXY_API_KEY (required), AIPROXY_BASE_URL (default http://127.0.0.1:8000), AIPROXY_MODEL (default gpt-4o-mini).
"""

import os

from openai import OpenAI

client = OpenAI(
    base_url=os.environ.get("AIPROXY_BASE_URL", "http://127.0.0.1:8000") + "/v1",
    api_key=os.environ["AIPROXY_API_KEY"],
)

stream = client.chat.completions.create(
    model=os.environ.get("AIPROXY_MODEL", "gpt-4o-mini"),
    messages=[{"role": "user", "content": "Count from one to five."}],
    stream=True,
)
for chunk in stream:
    # The last chunk can carry usage only, with no choices.
    if chunk.choices:
        print(chunk.choices[0].delta.content or "", end="", flush=True)
print()
