"""Per-stream sliding windows: a ring buffer of the last ``window_length`` samples of each stream."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from .messages import Sample


class RingWindow:
    """Fixed-size ring buffer of samples; :meth:`window` returns them oldest -> newest."""

    def __init__(self, window_length: int, n_channels: int) -> None:
        if window_length < 1 or n_channels < 1:
            raise ValueError("window_length and n_channels must be >= 1")
        self._buf = np.zeros((window_length, n_channels), dtype=np.float32)
        self._next = 0
        self._count = 0
        self.last_timestamp: float | None = None

    @property
    def is_full(self) -> bool:
        return self._count == self._buf.shape[0]

    def append(self, values: Sequence[float], timestamp: float) -> None:
        self._buf[self._next] = values
        self._next = (self._next + 1) % self._buf.shape[0]
        self._count = min(self._count + 1, self._buf.shape[0])
        self.last_timestamp = timestamp

    def window(self) -> NDArray[np.float32]:
        """A copy (the buffer keeps moving) in time order; only meaningful when full."""
        return np.roll(self._buf, -self._next, axis=0)


class WindowStore:
    """Windows for every stream seen; out-of-order samples are refused rather than silently reordered."""

    def __init__(self, window_length: int, channels: Sequence[str]) -> None:
        self.window_length = window_length
        self.channels = tuple(channels)
        self._windows: dict[str, RingWindow] = {}
        self.out_of_order = 0

    def push(self, sample: Sample) -> NDArray[np.float32] | None:
        """Add a sample; return the full window that ends at it (causal), or None while filling."""
        if len(sample.values) != len(self.channels):
            raise ValueError(f"sample has {len(sample.values)} values, windows have {len(self.channels)}")
        ring = self._windows.get(sample.stream)
        if ring is None:
            ring = self._windows[sample.stream] = RingWindow(self.window_length, len(self.channels))
        if ring.last_timestamp is not None and sample.timestamp < ring.last_timestamp:
            # A late sample would put an old reading at the "newest" end of the window.
            self.out_of_order += 1
            return None
        ring.append(sample.values, sample.timestamp)
        return ring.window() if ring.is_full else None

    @property
    def streams(self) -> tuple[str, ...]:
        return tuple(self._windows)
