"""A worker's shutdown releases what it holds, even when one step of it fails."""

import asyncio

import pytest

from aiproxy import lifecycle
from proxy import upstream


async def test_the_upstream_session_is_closed_even_when_the_audit_writer_fails_to_stop(monkeypatch):
    # This process may serve the suite's aiproxy too: its tasks and session are not this test's to stop.
    monkeypatch.setattr(lifecycle, "_tasks", [])
    monkeypatch.setattr(upstream, "_session", None)
    session = upstream.client()

    async def writer_stop_fails(*args, **kwargs):
        raise RuntimeError("the database went away during shutdown")

    monkeypatch.setattr(lifecycle.audit_writer, "stop", writer_stop_fails)

    with pytest.raises(RuntimeError):
        await lifecycle.shutdown()

    assert session.closed


async def test_a_background_task_that_died_does_not_stop_the_audit_writer_from_flushing(monkeypatch):
    """A task that ended with an error (re-raised when awaited) once left the writer running and the
    session open: the suite's own run ended with "Unclosed client session"."""
    monkeypatch.setattr(upstream, "_session", None)
    session = upstream.client()

    async def dies():
        raise RuntimeError("the poller met something it did not expect")

    died = asyncio.create_task(dies())
    await asyncio.sleep(0)
    monkeypatch.setattr(lifecycle, "_tasks", [died])
    stopped = []

    async def writer_stop(*args, **kwargs):
        stopped.append(True)

    monkeypatch.setattr(lifecycle.audit_writer, "stop", writer_stop)

    await lifecycle.shutdown()

    assert stopped == [True]
    assert session.closed
