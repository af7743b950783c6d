"""A database outage costs known keys nothing: they are served from memory without asking the database again."""

import pytest
from django.db import DatabaseError

from policies import cache
from policies.cache import ConfigCache, KeyContext
from policies.spec import PASS_THROUGH

KNOWN = KeyContext(key_id=1, key_name="alice-app", key_prefix="aip-Alice", expires_at=None, policy=PASS_THROUGH)


@pytest.fixture
def database(monkeypatch, settings):
    """The cache's two database calls, counted; `down` makes both fail as an unreachable database does."""
    settings.CONFIG_CACHE_MAX_AGE = 0.0  # every lookup wants a refresh: the worst case for an outage
    calls = {"load": 0, "stamp": 0, "down": False}

    def load_key(digest):
        calls["load"] += 1
        if calls["down"]:
            raise DatabaseError("connection refused")
        return KNOWN if digest == cache.key_hash("aip-known") else None

    def change_stamp():
        calls["stamp"] += 1
        if calls["down"]:
            raise DatabaseError("connection refused")
        return (1,)

    monkeypatch.setattr(cache, "_load_key", load_key)
    monkeypatch.setattr(cache, "_change_stamp", change_stamp)
    return calls


async def test_a_known_key_is_served_without_asking_the_database_again(database):
    config = ConfigCache()
    assert await config.authenticate("aip-known") == KNOWN
    database["down"] = True
    loads_before = database["load"]

    served = [await config.authenticate("aip-known") for _ in range(50)]

    assert served == [KNOWN] * 50
    assert database["load"] - loads_before == 1  # the one that found the outage


async def test_an_unknown_key_during_the_outage_is_refused_at_once(database):
    config = ConfigCache()
    await config.authenticate("aip-known")
    database["down"] = True
    await config.authenticate("aip-known")  # finds the outage
    loads_before = database["load"]

    for _ in range(10):
        with pytest.raises(DatabaseError):
            await config.authenticate("aip-never-seen")

    assert database["load"] == loads_before


async def test_the_cache_asks_again_once_a_change_check_succeeds(database, settings):
    settings.CONFIG_POLL_INTERVAL = 0.0
    config = ConfigCache()
    await config.authenticate("aip-known")
    database["down"] = True
    await config.authenticate("aip-known")
    assert config.database_down

    database["down"] = False
    await config.authenticate("aip-known")

    assert not config.database_down
