"""Several chat completions at once with the SDK's async client: aiproxy serves them concurrently.

Env: AIPROXY_API_KEY (required), AIPROXY_BASE_URL (default http://127.0.0.1:8000), AIPROXY_MODEL (default gpt-4o-mini).
"""

import asyncio
import os

from openai import AsyncOpenAI

QUESTIONS = ["Name a colour.", "Name a fruit.", "Name a planet."]


async def ask(client: AsyncOpenAI, question: str) -> str:
    reply = await client.chat.completions.create(
        model=os.environ.get("AIPROXY_MODEL", "gpt-4o-mini"),
        messages=[{"role": "user", "content": question}],
    )
    return reply.choices[0].message.content


async def main() -> None:
    async with AsyncOpenAI(
        base_url=os.environ.get("AIPROXY_BASE_URL", "http://127.0.0.1:8000") + "/v1",
        api_key=os.environ["AIPROXY_API_KEY"],
    ) as client:
        answers = await asyncio.gather(*(ask(client, question) for question in QUESTIONS))
    for question, answer in zip(QUESTIONS, answers, strict=True):
        print(f"{question} -> {answer}")


asyncio.run(main())
