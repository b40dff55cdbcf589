"""The one in-memory store bounded by bytes: values by key, least recently used first.

Masks (``masks``), decoded images (``decoded``) and outlines (``outlines``) are each kept
in one: the values' sizes (as ``size`` counts them) never add up to more than
``capacity_bytes``, the least recently used go first, and a value bigger than the whole
bound is not kept. Thread-safe: worker threads and the event loop share them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["SizedLRU"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SizedLRU(Generic[K, V]):
    def __init__(self, capacity_bytes: int, size: Callable[[V], int]) -> None:
        if capacity_bytes < 0:
            raise ValueError(f"capacity_bytes must be >= 0, got {capacity_bytes}")
        self.capacity_bytes = capacity_bytes
        self.evictions = 0
        self._size = size
        self._values: OrderedDict[K, V] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """The bytes held now (never above ``capacity_bytes``)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: K, touch: bool = True) -> V | None:
        """The value kept for ``key`` (made the most recently used unless ``touch`` is
        False), or None."""
        with self._lock:
            value = self._values.get(key)
            if value is not None and touch:
                self._values.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> bool:
        """Keep ``value``, evicting the least recently used to make room; False, keeping
        nothing new, when it is bigger than the whole bound."""
        size = self._size(value)
        if size > self.capacity_bytes:
            return False
        with self._lock:
            old = self._values.pop(key, None)
            self._bytes -= self._size(old) if old is not None else 0
            self._evict(self.capacity_bytes - size)
            self._values[key] = value
            self._bytes += size
        return True

    def reserve(self, size: int) -> int:
        """Make room for a value of ``size`` about to be made (nothing is evicted for one
        that will not be kept anyway); the bytes evicted."""
        if size > self.capacity_bytes:
            return 0
        with self._lock:
            return self._evict(self.capacity_bytes - size)

    def _evict(self, room: int) -> int:
        evicted = 0
        while self._values and self._bytes > room:
            _, value = self._values.popitem(last=False)
            size = self._size(value)
            self._bytes -= size
            evicted += size
            self.evictions += 1
        return evicted
