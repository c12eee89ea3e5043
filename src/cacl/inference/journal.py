"""The append-only journal of images added to an index folder: :class:`Journal`.

An index folder (:mod:`cacl.inference.index`) is a snapshot written once. Images added later are
appended to ``additions.log`` beside it, one *record* per add (one image or a batch):

    file   := b"CACLJNL1" record*
    record := b"REC1" payload_length:u32 crc32(payload):u32 payload
    payload:= json_length:u32 json features
    json   := {"names": [...], "cameras": [...]}   (UTF-8)
    features := M x D little-endian float32, one row per name

A record counts (is *committed*) only when all its bytes are present and its CRC-32 matches: the
length and checksum in the header are the commit record. :meth:`Journal.append` writes the
record with one ``write`` on a file opened for appending and ``fsync``s it before returning, so
an add acknowledged after ``append`` returns survives a crash or a kill -9 a moment later. A crash
during ``append`` leaves at most a torn last record, which :meth:`Journal.replay` detects
(short header, short payload or wrong checksum) and ignores: the records before it, everything
acknowledged, load as before. The writer truncates a torn tail before it appends again, so new
records never follow garbage. Only one process writes a journal at a time (an exclusive
``flock`` on ``writer.lock``, released by the kernel when the process dies).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cacl.errors import CaclError

log = logging.getLogger(__name__)

JOURNAL, WRITER_LOCK = "additions.log", "writer.lock"
MAGIC, RECORD = b"CACLJNL1", b"REC1"
_HEADER = struct.Struct("<4sII")  # record magic, payload length, CRC-32 of the payload
_JSON_LEN = struct.Struct("<I")


class JournalError(CaclError):
    """The journal of an index cannot be read or written."""


@dataclass
class Record:
    """One committed add: ``features[i]`` belongs to ``names[i]`` (camera ``cameras[i]``)."""

    names: list[str]
    cameras: list[str | None]
    features: np.ndarray


def encode(record: Record) -> bytes:
    """The bytes of ``record`` on disk (header included)."""
    features = np.ascontiguousarray(record.features, dtype="<f4")
    meta = json.dumps({"names": record.names, "cameras": record.cameras}, ensure_ascii=False)
    meta_bytes = meta.encode("utf-8")
    payload = _JSON_LEN.pack(len(meta_bytes)) + meta_bytes + features.tobytes()
    return _HEADER.pack(RECORD, len(payload), zlib.crc32(payload)) + payload


def _decode(payload: bytes, dim: int) -> Record:
    (meta_len,) = _JSON_LEN.unpack_from(payload)
    meta = json.loads(payload[_JSON_LEN.size : _JSON_LEN.size + meta_len].decode("utf-8"))
    raw = payload[_JSON_LEN.size + meta_len :]
    names, cameras = list(meta["names"]), list(meta["cameras"])
    features = np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(-1, dim)
    if not len(names) == len(cameras) == len(features):
        raise ValueError(f"{len(names)} names, {len(cameras)} cameras, {len(features)} rows")
    return Record(names, cameras, features)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename or a new file in ``folder`` durable (its directory entry)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """The journal of the index folder ``folder`` for ``dim``-dimensional features.

    ``replay()`` reads the committed records (any process may, any time); ``open_writer()``
    takes the writer lock and repairs a torn tail; then ``append()`` adds records durably.
    """

    def __init__(self, folder: str | os.PathLike, dim: int) -> None:
        self.folder, self.dim = Path(folder), int(dim)
        self.path = self.folder / JOURNAL
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self.end = 0  # byte offset after the last committed record (set by replay)

    # ------------------------------------------------------------------ reading

    def _records(self, data: bytes) -> Iterator[tuple[int, Record]]:
        """``(end offset, record)`` of each committed record; stops at a torn or bad one."""
        offset = len(MAGIC)
        while offset < len(data):
            if offset + _HEADER.size > len(data):
                break
            magic, length, crc = _HEADER.unpack_from(data, offset)
            start, stop = offset + _HEADER.size, offset + _HEADER.size + length
            if magic != RECORD or stop > len(data):
                break
            payload = data[start:stop]
            if zlib.crc32(payload) != crc:
                break
            try:
                record = _decode(payload, self.dim)
            except (ValueError, KeyError, UnicodeDecodeError, struct.error) as exc:
                raise JournalError(
                    f"{self.path}: unreadable record at byte {offset}: {exc}"
                ) from exc
            yield stop, record
            offset = stop

    def replay(self) -> list[Record]:
        """The committed records, oldest first (an empty list when there is no journal)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            self.end = 0
            return []
        except OSError as exc:
            raise JournalError(f"cannot read {self.path}: {exc}") from exc
        if len(data) < len(MAGIC):  # created but never completed: nothing was committed
            self.end = 0
            return []
        if data[: len(MAGIC)] != MAGIC:
            raise JournalError(f"{self.path} is not a cacl index journal")
        records, self.end = [], len(MAGIC)
        for end, record in self._records(data):
            records.append(record)
            self.end = end
        if self.end < len(data):
            log.warning(
                "%s: ignoring %d bytes after the last complete record (an add interrupted "
                "before it was acknowledged)",
                self.path,
                len(data) - self.end,
            )
        return records

    @property
    def has_records(self) -> bool:
        """Whether the file held committed records when last read or written."""
        return self.end > len(MAGIC)

    # ------------------------------------------------------------------ writing

    def open_writer(self) -> None:
        """Take the writer lock, then make the file end at the last committed record."""
        lock_path = self.folder / WRITER_LOCK
        try:
            self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise JournalError(f"cannot add to the index {self.folder}: {exc}") from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise JournalError(
                f"another process is writing to the index {self.folder} (a running 'cacl "
                "serve'? add through its API, POST /api/images, or stop it first)"
            ) from exc
        self.replay()  # under the lock: self.end is the true end of the committed records
        if not self.path.exists() or self.end == 0:
            self._start_empty()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        if os.fstat(self._fd).st_size > self.end:  # a torn tail from a crash: cut it off
            os.ftruncate(self._fd, self.end)
            os.fsync(self._fd)

    def _start_empty(self) -> None:
        """Replace the file, atomically, by a journal without records."""
        tmp = self.folder / f".{JOURNAL}.tmp"
        with open(tmp, "wb") as handle:
            handle.write(MAGIC)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.folder)
        self.end = len(MAGIC)

    def reset(self) -> None:
        """Forget every record, once a snapshot holds them all (the writer only)."""
        if self._fd is None:
            raise JournalError("the journal is not open for writing (open_writer first)")
        self._start_empty()
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)

    def append(self, record: Record) -> None:
        """Write ``record`` and ``fsync`` it: when this returns, the add is durable."""
        if self._fd is None:
            raise JournalError("the journal is not open for writing (open_writer first)")
        if record.features.ndim != 2 or record.features.shape[1] != self.dim:
            raise JournalError(f"features must be (M, {self.dim}), got {record.features.shape}")
        data = memoryview(encode(record))
        try:
            while data:
                written = os.write(self._fd, data)
                data = data[written:]
            os.fsync(self._fd)
        except OSError as exc:
            # the record may be torn: cut it off so the next append starts clean
            try:
                os.ftruncate(self._fd, self.end)
                os.fsync(self._fd)
            except OSError:
                log.exception("could not cut the failed record off %s", self.path)
            raise JournalError(f"cannot write to {self.path}: {exc}") from exc
        self.end = os.fstat(self._fd).st_size

    def close(self) -> None:
        for fd in (self._fd, self._lock_fd):
            if fd is not None:
                os.close(fd)  # closing the lock file releases the flock
        self._fd = self._lock_fd = None
