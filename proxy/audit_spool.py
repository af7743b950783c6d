"""The audit spool: per-process append-only files that hold each record until the database has it."""

import contextlib
import fcntl
import logging
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

logger = logging.getLogger(__name__)

SEGMENT_MAX_BYTES = 8 * 1024 * 1024
READ_CHUNK_BYTES = 1024 * 1024
# After a failed spool write, records go to memory only for this long before the disk is tried again.
SPOOL_RETRY_SECONDS = 1.0


_OWNER_TOKENS: dict[int, str] = {}


def process_owner() -> str:
    """This process's name in spool file names, the same for its audit spool and its begin journal."""
    pid = os.getpid()  # per process, not per import: gunicorn forks its workers from a preloaded master
    return f"{pid}-{_OWNER_TOKENS.setdefault(pid, secrets.token_hex(4))}"


def owner_of(path: Path) -> str:
    """The process part of a spool file's name: audit-<owner>-000001.jsonl -> <owner>."""
    return path.name.split("-", 1)[1].rsplit("-", 1)[0]


# --- the spool --------------------------------------------------------------------------


@dataclass(eq=False)
class Segment:
    """One spool file, locked by its owner: whole lines up to `size`, `committed` of them in the database."""

    path: Path
    fd: int
    size: int = 0
    records: int = 0
    committed: int = 0
    sealed: bool = False  # takes no more appends

    @property
    def done(self) -> bool:
        return self.sealed and self.committed >= self.records

    def close(self, *, delete: bool) -> None:
        # Unlinked while still locked: a claimer never gets to replay a file that is finished.
        if delete:
            with contextlib.suppress(OSError):
                self.path.unlink(missing_ok=True)
        os.close(self.fd)


class Spool:
    """This process's append-only spool files, and the ones it claimed from dead processes."""

    def __init__(self, directory: Path, kind: str = "audit") -> None:
        self.directory = Path(directory)
        self.kind = kind  # "audit": finished records; "inflight": the begin journal (proxy/audit_journal.py)
        self.segments: list[Segment] = []  # oldest first; an unsealed last one takes the appends
        self.orphans: list[Segment] = []
        self.failing_until = 0.0
        self._name = f"{kind}-{process_owner()}"
        self._sequence = 0

    def append(self, line: bytes) -> tuple[Segment, int] | None:
        """Writes one line (no fsync: surviving the process is enough); where it went, or None."""
        if time.monotonic() < self.failing_until:
            return None
        segment = None
        try:
            segment = self._writable()
            if os.write(segment.fd, line) != len(line):
                raise OSError("short write to the audit spool")
        except OSError:
            self._failed(segment)
            return None
        offset = segment.size
        segment.size += len(line)
        segment.records += 1
        return segment, offset

    def _writable(self) -> Segment:
        active = self.segments[-1] if self.segments and not self.segments[-1].sealed else None
        if active is not None and active.size < SEGMENT_MAX_BYTES:
            return active
        if active is not None:
            active.sealed = True
        self.segments.append(self._create())
        return self.segments[-1]

    def _create(self) -> Segment:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._sequence += 1
        name = f"{self._name}-{self._sequence:06d}.jsonl"
        temporary = self.directory / f".{name}.tmp"
        fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            # Locked before it bears a name claimers look for: nobody can take a live worker's file.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(temporary, self.directory / name)
        except OSError:
            os.close(fd)
            temporary.unlink(missing_ok=True)
            raise
        return Segment(self.directory / name, fd)

    def _failed(self, segment: Segment | None) -> None:
        if time.monotonic() >= self.failing_until:
            logger.error("audit spool in %s is not writable; records are kept in memory only", self.directory)
        self.failing_until = time.monotonic() + SPOOL_RETRY_SECONDS
        if segment is not None:
            # Cut a partial line off, and append no more to this file: what it holds stays readable.
            with contextlib.suppress(OSError):
                os.ftruncate(segment.fd, segment.size)
            segment.sealed = True

    def claim_orphans(self) -> list[Segment]:
        """Takes over the files no live process holds (their owner died); runs in the writer's thread."""
        claimed = []
        if not self.directory.is_dir():
            return claimed
        for path in sorted(self.directory.glob(f".{self.kind}-*.tmp")):
            # Left by a process that died while creating a file: empty by construction.
            if (segment := _locked(path)) is not None:
                segment.close(delete=True)
        for path in sorted(self.directory.glob(f"{self.kind}-*.jsonl")):
            if (segment := _locked(path)) is not None:
                segment.records, segment.size = whole_lines(segment.fd)
                segment.sealed = True
                claimed.append(segment)
        return claimed

    def close(self) -> None:
        """Releases every file: finished ones are deleted, the rest wait for the next start."""
        for segment in self.segments + self.orphans:
            segment.sealed = True
            segment.close(delete=segment.done)
        self.segments, self.orphans = [], []


def _locked(path: Path) -> Segment | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_nlink > 0:  # not replayed and deleted by another claimer meanwhile
            return Segment(path, fd)
    except OSError:  # held by a live process
        pass
    os.close(fd)
    return None


def whole_lines(fd: int) -> tuple[int, int]:
    """How many complete lines the file holds, and where the last one ends (a torn tail is ignored)."""
    count = end = offset = 0
    while chunk := os.pread(fd, READ_CHUNK_BYTES, offset):
        count += chunk.count(b"\n")
        if (last := chunk.rfind(b"\n")) >= 0:
            end = offset + last + 1
        offset += len(chunk)
    return count, end


def read_lines(fd: int, offset: int, end: int, limit: int) -> list[bytes]:
    """Up to `limit` whole lines from `offset`, never past `end`."""
    lines: list[bytes] = []
    chunk_size = READ_CHUNK_BYTES
    while offset < end and len(lines) < limit:
        data = os.pread(fd, min(chunk_size, end - offset), offset)
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            if offset + len(data) >= end:
                break  # a torn tail: cannot happen below `end`, but never loop on it
            chunk_size *= 2  # one line longer than a chunk
            continue
        for piece in data[:cut].split(b"\n")[:-1][: limit - len(lines)]:
            lines.append(piece + b"\n")
            offset += len(piece) + 1
    return lines


def spool_directory() -> Path:
    """AUDIT_SPOOL_DIR/<database name>: a spool is only ever replayed into the database it was meant for."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(settings.DATABASES["default"]["NAME"])).strip("._")
    return Path(settings.AUDIT_SPOOL_DIR) / (name[-64:] or "default")
