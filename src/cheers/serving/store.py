"""Stored responses: what ``previous_response_id`` continues, bounded in number and age.

Every stored response belongs to the client that made it (a hash of its ``Authorization``
header: its API key) and has an unguessable id (``resp_`` + 192 random bits). A lookup by another
client, of an expired or evicted id, or of one never made is the same "not found", so an id
reveals nothing about other clients. The oldest responses are evicted first when the store is
full, and responses older than the time limit are dropped on every access.
"""

from __future__ import annotations

import collections
import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image


def owner_of(authorization: str | None) -> str:
    """The client a request comes from: a digest of its Authorization header (its API key);
    requests without one share the anonymous owner."""
    return hashlib.sha256((authorization or "").encode()).hexdigest()


def new_id(prefix: str) -> str:
    """An unguessable id, e.g. ``resp_…`` (192 random bits)."""
    return f"{prefix}_{secrets.token_urlsafe(24)}"


@dataclass
class StoredResponse:
    """A finished response: its body (for GET), and the conversation it ends (messages with
    image markers and their images, the instructions' system message excluded), plus the
    images it drew, by output item id, that later input may reference (``item_reference``)."""

    owner: str
    body: dict[str, Any]
    messages: list[dict[str, str]]
    images: list[Image.Image]
    named: dict[str, Image.Image] = field(default_factory=dict)
    created: float = 0.0


class ResponseStore:
    """At most ``max_items`` responses, each kept ``ttl_s`` seconds; see the module docstring."""

    def __init__(
        self, max_items: int, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_items = max_items
        self.ttl_s = ttl_s
        self._clock = clock
        self._items: collections.OrderedDict[str, StoredResponse] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._items)

    def put(self, ident: str, record: StoredResponse) -> None:
        with self._lock:
            record.created = self._clock()
            self._items[ident] = record
            self._expire()
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)  # the oldest

    def get(self, ident: str, owner: str) -> StoredResponse | None:
        with self._lock:
            self._expire()
            return self._find(ident, owner)

    def delete(self, ident: str, owner: str) -> bool:
        with self._lock:
            self._expire()
            if self._find(ident, owner) is None:
                return False
            del self._items[ident]
            return True

    def _find(self, ident: str, owner: str) -> StoredResponse | None:
        record = self._items.get(ident)
        if record is None or not secrets.compare_digest(record.owner, owner):
            return None
        return record

    def _expire(self) -> None:
        limit = self._clock() - self.ttl_s
        while self._items:
            ident, oldest = next(iter(self._items.items()))
            if oldest.created > limit:
                return
            del self._items[ident]
