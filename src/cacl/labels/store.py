"""Labels a person gives in ``cacl serve``, kept crash-safe beside the index: :class:`LabelStore`.

``INDEX_DIR/labels.log`` is append-only, one event per line: ``<crc32 as 8 hex digits> <json>``.
An event is one of::

    {"op": "same",      "id": ..., "a": NAME, "b": NAME, "by": WHO, "at": ISO time}
    {"op": "different", "id": ..., "a": NAME, "b": NAME, "by": WHO, "at": ...}
    {"op": "undo",      "id": ..., "target": EVENT_ID,   "by": WHO, "at": ...}

:meth:`LabelStore.append` writes one line with one ``write`` on a file opened for appending,
under an exclusive ``flock`` (several processes, and the threads of one, may label at once), and
``fsync``s it before returning: an acknowledged click survives a kill -9. A torn last line (a
crash during the write) fails its checksum and is ignored on replay; the writer cuts it off
before appending again. Every process re-reads the lines other writers appended (they are
appended, never rewritten), so nobody loses anyone else's work.

:func:`resolve` turns the events into identities (pure): ``same`` joins two images' identities
(union-find), ``different`` keeps a pair of identities apart, ``undo`` cancels an event. Where the
index has tracklets, an image stands for its whole tracklet.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import uuid
import zlib
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cacl.errors import CaclError

log = logging.getLogger(__name__)

LABELS_LOG = "labels.log"
OPS = ("same", "different", "undo")


class LabelError(CaclError):
    """A label cannot be recorded as asked (unknown image, a conflict, nothing to undo)."""


class LabelConflict(LabelError):
    """Marking these two as one person needs a merge, or contradicts a "different"."""

    def __init__(self, message: str, identities: tuple[int, int]):
        super().__init__(message)
        self.identities = identities


def encode_line(event: Mapping[str, Any]) -> bytes:
    text = json.dumps(event, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    data = text.encode("utf-8")
    return b"%08x " % zlib.crc32(data) + data + b"\n"


def decode_lines(data: bytes) -> tuple[list[dict], int, int]:
    """The events of the whole lines of ``data``, the bytes those lines take (a torn last line,
    without its newline, is left for later), and how many whole lines were damaged (skipped)."""
    events, consumed, bad = [], 0, 0
    while True:
        end = data.find(b"\n", consumed)
        if end < 0:
            break
        line, consumed = data[consumed:end], end + 1
        try:
            payload = line[9:]
            if len(line) < 10 or line[8:9] != b" " or int(line[:8], 16) != zlib.crc32(payload):
                raise ValueError("checksum")
            event = json.loads(payload.decode("utf-8"))
            if not isinstance(event, dict) or event.get("op") not in OPS or "id" not in event:
                raise ValueError("not an event")
        except (ValueError, UnicodeDecodeError):
            bad += 1
            continue
        events.append(event)
    return events, consumed, bad


@dataclass
class Identity:
    number: int  # 1, 2, ... in the order identities were first labelled
    images: list[str]


@dataclass
class Labels:
    """What the events say: identities (2+ images each), pairs kept apart, who did what."""

    identities: list[Identity]
    of_image: dict[str, int]  # image -> identity number
    apart: set[tuple[int, int]]  # identity numbers marked "different" (smaller first)
    events: list[dict] = field(default_factory=list)  # in force (not undone), in order
    by: dict[str, int] = field(default_factory=dict)  # events in force per person

    def identity(self, image: str) -> int | None:
        return self.of_image.get(image)


class _Sets:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def resolve(
    events: Iterable[Mapping[str, Any]], tracklets: Mapping[str, str] | None = None
) -> Labels:
    """Identities from ``events`` (see the module's docstring); ``tracklets``: image -> tracklet
    key, so that labelling one image of a tracklet labels all of it."""
    events = list(events)
    undone = {e["target"] for e in events if e.get("op") == "undo"}
    live = [e for e in events if e.get("op") in ("same", "different") and e["id"] not in undone]
    members: dict[str, list[str]] = {}
    if tracklets:
        for image, key in tracklets.items():
            members.setdefault(key, []).append(image)
    sets = _Sets()
    order: list[str] = []

    seen: set[str] = set()

    def touch(image: str) -> None:
        group = members.get(tracklets.get(image), []) if tracklets else []
        for other in [image, *group]:
            if other not in seen:
                seen.add(other)
                order.append(other)
            sets.union(image, other)

    for e in live:
        touch(e["a"])
        touch(e["b"])
        if e["op"] == "same":
            sets.union(e["a"], e["b"])
    groups: dict[str, list[str]] = {}
    for image in order:
        groups.setdefault(sets.find(image), []).append(image)
    identities, of_image = [], {}
    for images in groups.values():
        if len(images) < 2:
            continue
        number = len(identities) + 1
        identities.append(Identity(number, images))
        for image in images:
            of_image[image] = number
    apart = set()
    for e in live:
        if e["op"] == "different":
            ia, ib = of_image.get(e["a"]), of_image.get(e["b"])
            if ia is not None and ib is not None and ia != ib:
                apart.add((min(ia, ib), max(ia, ib)))
    by: dict[str, int] = {}
    for e in live:
        by[e.get("by") or "anonymous"] = by.get(e.get("by") or "anonymous", 0) + 1
    return Labels(identities, of_image, apart, live, by)


class LabelStore:
    """The labels of one index folder; thread-safe, and safe beside other processes."""

    def __init__(
        self,
        folder: str | os.PathLike,
        known: Iterable[str] | Container[str] | None = None,
        tracklets: Mapping[str, str] | None = None,
    ) -> None:
        self.path = Path(folder) / LABELS_LOG
        # anything with ``in`` (a set, or the live index itself, which grows)
        self.known = (
            None if known is None else (known if hasattr(known, "__contains__") else set(known))
        )
        self.tracklets = dict(tracklets or {})
        self._lock = threading.Lock()
        self._events: list[dict] = []
        self._read_to = 0
        self._labels: Labels | None = None

    # ------------------------------------------------------------------ reading

    def _refresh(self) -> None:
        """Read what was appended since the last look (by anyone)."""
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._read_to)
                data = handle.read()
        except FileNotFoundError:
            return
        events, consumed, bad = decode_lines(data)
        if bad:
            log.warning("%s: %d damaged lines skipped", self.path, bad)
        if consumed:
            self._events.extend(events)
            self._read_to += consumed
            self._labels = None

    def labels(self) -> Labels:
        with self._lock:
            self._refresh()
            if self._labels is None:
                self._labels = resolve(self._events, self.tracklets)
            return self._labels

    def events(self) -> list[dict]:
        with self._lock:
            self._refresh()
            return list(self._events)

    # ------------------------------------------------------------------ writing

    def _append(self, event: dict) -> dict:
        line = encode_line(event)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size:  # cut a torn last line (a crash mid-write) before appending
                os.lseek(fd, max(0, size - 1), os.SEEK_SET)
                if os.read(fd, 1) != b"\n":
                    tail = os.pread(fd, min(size, 1 << 20), max(0, size - (1 << 20)))
                    cut = tail.rfind(b"\n")
                    os.ftruncate(fd, size - len(tail) + cut + 1 if cut >= 0 else 0)
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)  # releases the lock
        return event

    def _event(self, op: str, who: str | None, **fields: Any) -> dict:
        return {
            "op": op,
            "id": uuid.uuid4().hex[:16],
            "by": who or "anonymous",
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **fields,
        }

    def _check(self, *images: str) -> None:
        for image in images:
            if not isinstance(image, str) or not image:
                raise LabelError("an image name is needed")
            if self.known is not None and image not in self.known:
                raise LabelError(f"{image!r} is not an image of this index")

    def mark(self, op: str, a: str, b: str, who: str | None = None, merge: bool = False) -> dict:
        """Record that ``a`` and ``b`` are the same person (``op="same"``) or not
        (``"different"``); returns the event. ``same`` across two identities of 2+ images
        raises :class:`LabelConflict` unless ``merge``; across a "different" pair, always."""
        if op not in ("same", "different"):
            raise LabelError(f"op must be same or different, got {op!r}")
        self._check(a, b)
        if a == b:
            raise LabelError("an image is always the same person as itself")
        with self._lock:
            self._refresh()
            labels = self._labels or resolve(self._events, self.tracklets)
            ia, ib = labels.identity(a), labels.identity(b)
            if op == "same" and ia is not None and ib is not None and ia != ib:
                pair = (min(ia, ib), max(ia, ib))
                if pair in labels.apart:
                    raise LabelConflict(
                        f"identities {ia} and {ib} were marked as different people; undo that "
                        "first",
                        pair,
                    )
                if not merge:
                    raise LabelConflict(
                        f"{b} already belongs to identity {ib}; merge identities {ia} and {ib}?",
                        pair,
                    )
            if op == "different" and ia is not None and ia == ib:
                raise LabelConflict(
                    f"both images belong to identity {ia}; undo a match first", (ia, ib)
                )
            event = self._append(self._event(op, who, a=a, b=b))
            self._refresh()
            return event

    def undo(self, who: str | None = None, event_id: str | None = None) -> dict:
        """Cancel ``event_id``, or the latest event in force of ``who``; returns the undo."""
        with self._lock:
            self._refresh()
            live = resolve(self._events, self.tracklets).events
            if event_id is None:
                mine = [e for e in live if e.get("by") == (who or "anonymous")]
                if not mine:
                    raise LabelError("nothing of yours to undo")
                event_id = mine[-1]["id"]
            elif not any(e["id"] == event_id for e in live):
                raise LabelError(f"no label {event_id!r} in force to undo")
            event = self._append(self._event("undo", who, target=event_id))
            self._refresh()
            return event


def index_tracklets(names: Iterable[str], root: str | os.PathLike | None) -> dict[str, str]:
    """Image name -> tracklet key (``camera/tracklet``) of the indexed images that the gallery
    root's ``tracklets.csv`` (``cacl crops``) lists; empty without one."""
    if root is None or not (Path(root) / "tracklets.csv").is_file():
        return {}
    from cacl.data.readers.tracklets import read_tracklets_csv

    records = read_tracklets_csv(Path(root) / "tracklets.csv")
    out = {}
    for name in names:
        record = records.get(Path(name).name)
        if record is not None:
            out[name] = f"{record.camera}/{record.tracklet}"
    return out
