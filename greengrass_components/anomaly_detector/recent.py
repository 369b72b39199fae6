"""The last rows of a stream, kept so a model swap can warm the new model's post-processing up.

Post-processing state (likelihood histories, warm-up count, damping) is in the units of the model that
produced the scores, so a new model starts a new state. Started cold, a stream is blind for the warm-up
rows and its likelihood is noisy until its history fills. Replaying the stream's recent samples through
the new model at swap time gives it the state it would have had if it had been running all along.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray


def write_ring(buffer: NDArray[Any], start: int, items: NDArray[Any]) -> int:
    """Write ``items`` (along axis 0) into the circular ``buffer`` from ``start``; returns the next start.

    Only the last ``len(buffer)`` items are written when more arrive at once.
    """
    size = int(buffer.shape[0])
    items = items[-size:]
    k = int(items.shape[0])
    end = start + k
    if end <= size:
        buffer[start:end] = items
    else:
        first = size - start
        buffer[start:] = items[:first]
        buffer[: k - first] = items[first:]
    return end % size


class RecentRows:
    """A ring of the last ``capacity`` rows ``[capacity, channels]`` (float32), oldest first on read."""

    def __init__(self, capacity: int, channels: int) -> None:
        if capacity < 1 or channels < 1:
            raise ValueError("capacity and channels must be >= 1")
        self._buf = np.zeros((capacity, channels), dtype=np.float32)
        self._next = 0
        self.count = 0

    @property
    def capacity(self) -> int:
        return int(self._buf.shape[0])

    @property
    def channels(self) -> int:
        return int(self._buf.shape[1])

    def extend(self, rows: NDArray[np.float32]) -> None:
        """Append ``rows`` ``[k, channels]`` (time order)."""
        self._next = write_ring(self._buf, self._next, rows)
        self.count = min(self.capacity, self.count + rows.shape[0])

    def rows(self) -> NDArray[np.float32]:
        """A copy of the rows held, oldest first."""
        if self.count < self.capacity:
            return self._buf[: self.count].copy()
        return np.concatenate([self._buf[self._next :], self._buf[: self._next]])
