"""Identifiers made without a system call: request and record ids need uniqueness, not secrecy."""

import os
import random
import uuid

# Seeded from the OS once per process; 128 random bits per id, so collisions are not a concern.
_random = random.Random()
os.register_at_fork(after_in_child=_random.seed)


def new_uuid() -> uuid.UUID:
    return uuid.UUID(int=_random.getrandbits(128), version=4)


def new_hex_id() -> str:
    return new_uuid().hex
