from __future__ import annotations

from greengrass_components.anomaly_detector.messages import Sample
from greengrass_components.anomaly_detector.windowing import WindowStore


def test_window_is_the_last_n_samples_oldest_first_per_stream() -> None:
    store = WindowStore(3, ["a", "b"])
    outputs = [store.push(Sample("s1", float(t), (t, -t))) for t in range(5)]
    assert outputs[0] is None
    assert outputs[1] is None
    assert outputs[4] is not None
    assert outputs[4].tolist() == [[2, -2], [3, -3], [4, -4]]
    # another stream has its own, still filling, window
    assert store.push(Sample("s2", 0.0, (9.0, 9.0))) is None
    assert store.streams == ("s1", "s2")


def test_returned_window_does_not_change_when_buffer_moves() -> None:
    store = WindowStore(2, ["a"])
    store.push(Sample("s", 0.0, (1.0,)))
    first = store.push(Sample("s", 1.0, (2.0,)))
    store.push(Sample("s", 2.0, (3.0,)))
    assert first is not None
    assert first.tolist() == [[1.0], [2.0]]


def test_out_of_order_samples_are_refused_and_counted() -> None:
    store = WindowStore(2, ["a"])
    store.push(Sample("s", 10.0, (1.0,)))
    assert store.push(Sample("s", 5.0, (100.0,))) is None
    window = store.push(Sample("s", 11.0, (2.0,)))
    assert store.out_of_order == 1
    assert window is not None
    assert window.tolist() == [[1.0], [2.0]]
