from __future__ import annotations

import numpy as np
import pytest

from greengrass_components.anomaly_detector.errors import MessageError
from greengrass_components.anomaly_detector.windowing import RingWindow, WindowStore


def test_ring_window_is_the_last_n_samples_oldest_first() -> None:
    ring = RingWindow(3, 2)
    for t in range(5):
        ring.append((t, -t), float(t))
    assert ring.is_full
    assert ring.window().tolist() == [[2, -2], [3, -3], [4, -4]]
    assert ring.recent(2).tolist() == [[3, -3], [4, -4]]


def test_ring_replace_then_append_keeps_order() -> None:
    ring = RingWindow(3, 1)
    ring.replace(np.array([[1.0], [2.0], [3.0]], dtype=np.float32), 10, 3.0)
    ring.append((4.0,), 4.0)
    assert ring.window()[:, 0].tolist() == [2.0, 3.0, 4.0]
    assert ring.count == 3


def test_streams_have_their_own_rings() -> None:
    store = WindowStore(3, ["a"])
    store.ring("s1", 0.0).append((1.0,), 0.0)
    assert store.ring("s2", 0.0).count == 0
    assert store.streams == ("s1", "s2")


def test_late_and_repeated_timestamps_are_refused_with_their_kind() -> None:
    store = WindowStore(2, ["a"])
    store.ring("s", 10.0).append((1.0,), 10.0)
    with pytest.raises(MessageError, match=r"stream 's': 5\.0 is before 10\.0") as late:
        store.ring("s", 5.0)
    assert late.value.kind == "out_of_order"
    with pytest.raises(MessageError, match=r"already has a sample at 10\.0") as repeated:
        store.ring("s", 10.0)
    assert repeated.value.kind == "duplicate_timestamp"


def test_stream_count_is_bounded() -> None:
    store = WindowStore(2, ["a"], max_streams=2)
    store.ring("a", 0.0)
    store.ring("b", 0.0)
    with pytest.raises(MessageError, match="more than 2 streams; 'c' refused") as refused:
        store.ring("c", 0.0)
    assert refused.value.kind == "too_many_streams"
