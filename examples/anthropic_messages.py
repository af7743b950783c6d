"""Anthropic's Messages API through aiproxy with the Anthropic SDK (the key goes as x-api-key), plain and streamed.

Env: AIPROXY_API_KEY (required), AIPROXY_BASE_URL (default http://127.0.0.1:8000), AIPROXY_MODEL (default claude-haiku).
"""

import os

import anthropic

# The SDK appends /v1/messages itself: give it aiproxy's root.
client = anthropic.Anthropic(
    base_url=os.environ.get("AIPROXY_BASE_URL", "http://127.0.0.1:8000"),
    api_key=os.environ["AIPROXY_API_KEY"],
)
model = os.environ.get("AIPROXY_MODEL", "claude-haiku")
messages = [{"role": "user", "content": "What does an API gateway do?"}]

message = client.messages.create(model=model, max_tokens=200, messages=messages)
print(message.content[0].text)

with client.messages.stream(model=model, max_tokens=200, messages=messages) as stream:
    for text in stream.text_stream:
        print(text, end="", flush=True)
print()
print(f"tokens: {message.usage.input_tokens} in, {message.usage.output_tokens} out")
