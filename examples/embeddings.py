"""Embeddings through aiproxy with the OpenAI SDK.

Env: AIPROXY_API_KEY (required), AIPROXY_BASE_URL (default http://127.0.0.1:8000),
AIPROXY_EMBEDDING_MODEL (default text-embedding-3-small).
"""

import os

from openai import OpenAI

client = OpenAI(
    base_url=os.environ.get("AIPROXY_BASE_URL", "http://127.0.0.1:8000") + "/v1",
    api_key=os.environ["AIPROXY_API_KEY"],
)

response = client.embeddings.create(
    model=os.environ.get("AIPROXY_EMBEDDING_MODEL", "text-embedding-3-small"),
    input=["aiproxy is a policy gateway", "for OpenAI-compatible APIs"],
)
# LiteLLM's offline mock answers with one fixed vector whatever the input; a real model, one per input.
for item in response.data:
    print(f"vector {item.index}: {len(item.embedding)} dimensions, starts {item.embedding[:3]}")
