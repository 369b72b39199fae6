"""The last rows of a stream, kept so a model swap can warm the new model's post-processing up.

Post-processing state (likelihood histories, warm-up count, damping) is in the units of the model that
produced the scores, so a new model starts a new state. Started cold, a stream is blind for the warm-up
rows and its likelihood is noisy until its history fills. Replaying the stream's recent samples through
the new model at swap time gives it the state it would have had if it had been running all along.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


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
        cap = self.capacity
        k = rows.shape[0]
        if k >= cap:
            self._buf[:] = rows[-cap:]
            self._next = 0
        else:
            end = self._next + k
            if end <= cap:
                self._buf[self._next : end] = rows
            else:
                first = cap - self._next
                self._buf[self._next :] = rows[:first]
                self._buf[: k - first] = rows[first:]
            self._next = end % cap
        self.count = min(cap, self.count + k)

    def rows(self) -> NDArray[np.float32]:
        """A copy of the rows held, oldest first."""
        if self.count < self.capacity:
            return self._buf[: self.count].copy()
        return np.concatenate([self._buf[self._next :], self._buf[: self._next]])
