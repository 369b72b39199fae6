"""The vectorised post-processing computes what the per-window reference computes, block size regardless."""

from __future__ import annotations

import json

import numpy as np
import pytest

from greengrass_components.anomaly_detector.batch import Segment
from greengrass_components.anomaly_detector.decision_rule import DecisionRule
from greengrass_components.anomaly_detector.postprocess import (
    REARM_MIN_RATIO,
    PostprocessConfig,
    StreamPostprocessor,
    log10_tail,
)
from greengrass_components.anomaly_detector.postprocess_block import BlockPostprocessor, log10_tails, supports
from training.evaluate import NAB_POSTPROCESS, SKAB_POSTPROCESS

THRESHOLD = 2.5


def _stream(n: int, channels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw scores and values with what every check reacts to: spikes, a level shift, a broken daily cycle."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    values = 50.0 + 5.0 * np.sin(2 * np.pi * t / 288)[:, None] + rng.normal(0.0, 0.5, size=(n, channels))
    values[n // 2 :, 0] += 4.0  # level shift
    flat = n // 4
    values[flat : flat + 150, :] = values[flat - 1, :]  # the daily cycle stops (flat line)
    values[(7 * n) // 12, -1] += 40.0  # out of the range seen so far
    raw = np.abs(rng.standard_t(3, size=n)) * 0.8
    for at in range(900, n, 1700):
        raw[at : at + 6] += rng.uniform(5.0, 30.0)
    return raw.astype(np.float32), values.astype(np.float32)


def _reference(config: PostprocessConfig, raw: np.ndarray, values: np.ndarray) -> np.ndarray:
    state = StreamPostprocessor(config, THRESHOLD)
    rows = values.tolist()
    return np.array([state.update(float(r), rows[i]) for i, r in enumerate(raw.tolist())])


def _blocks(config: PostprocessConfig, raw: np.ndarray, values: np.ndarray, seed: int) -> np.ndarray:
    block = BlockPostprocessor(config, THRESHOLD)
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    start = 0
    while start < raw.shape[0]:
        # Every size from a single window to more than a whole damping period.
        size = int(rng.choice([1, 2, 7, 64, 300, 1100]))
        stop = min(raw.shape[0], start + size)
        out.append(block.update_block("s", raw[start:stop], values[start:stop]))
        start = stop
    return np.concatenate(out)


# The flat stretch (150 rows) is shorter than every reference window: over an exactly constant reference
# the std is rounding noise in both implementations (each its own), and the ratio to it is not comparable.
CONFIGS = {
    "nab": dict(NAB_POSTPROCESS),
    "skab-ratio-hold": dict(SKAB_POSTPROCESS),
    "log-scores-fixed-history": {
        "method": "likelihood", "short_window": 5, "long_window": 700, "warmup": 50, "log_scores": True,
        "suppress_level": 0.6, "suppress_rows": 150, "suppress_factor": 0.25, "hold_rows": 20,
        "spatial_tolerance": 0.1, "seasonal_lag": 100, "reference_window": 200, "value_short_window": 12,
    },
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_block_scores_equal_the_reference(name: str) -> None:
    config = PostprocessConfig.from_json(json.dumps(CONFIGS[name]))
    assert supports(config)
    raw, values = _stream(12_000, channels=2, seed=3)

    expected = _reference(config, raw, values)
    got = _blocks(config, raw, values, seed=11)

    assert got == pytest.approx(expected, abs=1e-9)
    level = config.decision_level
    assert np.array_equal(got >= level, expected >= level)
    # The data exercises the rules: alarms, and (for damping settings) damped rows after them.
    assert 3 <= int((expected >= level).sum()) < 3000


# log1p-compressed scores: a 10x larger raw spike is a less than 1.5x larger average.
@pytest.mark.parametrize(("name", "ratio"), [("nab", 3.0), ("log-scores-fixed-history", 1.2)])
def test_block_rearm_equals_the_reference(name: str, ratio: float) -> None:
    raw, values = _stream(12_000, channels=1, seed=4)
    for at in range(900, 12_000, 1700):
        raw[at + 60 : at + 66] += 10.0 * raw[at : at + 6].max()  # far larger, inside the damping: re-arms
        raw[at + 120 : at + 126] += 0.5 * raw[at : at + 6].max()  # smaller: stays damped
    rearm = PostprocessConfig.from_json(json.dumps({**CONFIGS[name], "suppress_rearm_ratio": ratio}))
    plain = PostprocessConfig.from_json(json.dumps({**CONFIGS[name], "suppress_rearm_ratio": 0.0}))
    assert supports(rearm)

    expected = _reference(rearm, raw, values)
    got = _blocks(rearm, raw, values, seed=12)

    assert got == pytest.approx(expected, abs=1e-9)

    # Alarm onsets (a row >= level after one below it): re-arming adds some, the plain damping has fewer.
    def onsets(scores: np.ndarray) -> int:
        up = scores >= rearm.decision_level
        return int((up[1:] & ~up[:-1]).sum())

    assert onsets(expected) > onsets(_reference(plain, raw, values))


def test_block_record_equals_the_reference_on_drifts_ties_and_flat_lines() -> None:
    rng = np.random.default_rng(8)
    n = 9000
    drift = 50.0 + 0.05 * rng.normal(size=n).cumsum()  # wanders into levels it left long ago
    ties = np.round(50.0 + 3.0 * rng.normal(size=n))  # many equal values: the range's edges repeat
    flat = np.full(n, 7.0)
    flat[6000:] += 1.0  # a step out of a flat line
    raw = np.abs(rng.normal(size=n)).astype(np.float32)
    config = PostprocessConfig.from_json(
        json.dumps({"method": "ratio", "short_window": 1, "warmup": 0, "log_scores": False,
                    "record_window": 100, "record_history": 2000, "record_min_history": 500})
    )  # fmt: skip
    fired = {}
    for name, column in (("drift", drift), ("ties", ties), ("flat", flat), ("all", None)):
        values = np.stack([drift, ties, flat], axis=1) if column is None else column[:, None]
        values = values.astype(np.float32)
        # Raw scores far below the threshold: a score >= 0.5 is the record check firing.
        state = StreamPostprocessor(config, 1e6)
        rows = values.tolist()
        expected = np.array([state.update(float(r), rows[i]) for i, r in enumerate(raw.tolist())])
        block = BlockPostprocessor(config, 1e6)
        parts, start = [], 0
        while start < n:
            stop = min(n, start + int(rng.choice([1, 3, 64, 700, 2500])))
            parts.append(block.update_block("s", raw[start:stop], values[start:stop]))
            start = stop
        got = np.concatenate(parts)
        assert np.array_equal(got >= 0.5, expected >= 0.5), name
        assert got == pytest.approx(expected, abs=1e-9), name
        fired[name] = expected >= 0.5
    assert fired["drift"].any()
    assert fired["flat"][6000:6100].any()
    assert not fired["flat"][:6000].any()
    assert np.array_equal(fired["all"], fired["drift"] | fired["ties"] | fired["flat"])


def test_unsupported_settings_stay_on_the_reference() -> None:
    for extra in ({"level_windows": [12]}, {"variance_window": 48}, {"combine": "union"}):
        config = PostprocessConfig.from_json(json.dumps({**NAB_POSTPROCESS, **extra}))
        assert not supports(config)
        with pytest.raises(ValueError, match="vectorised subset"):
            BlockPostprocessor(config, THRESHOLD)
    # A rule for such a model still post-processes (per window), whatever the segment sizes.
    rule = DecisionRule(
        THRESHOLD, PostprocessConfig.from_json(json.dumps({**NAB_POSTPROCESS, "combine": "union"}))
    )
    raw, values = _stream(400, channels=1, seed=5)
    windows = np.repeat(values[:, None, :], 4, axis=1)
    flags, post = rule.decide([Segment("s", 0, np.arange(400.0), 0.0)], raw, windows)
    assert post is not None
    assert post.shape == flags.shape == (400,)


def test_rule_mixes_block_and_single_streams_with_reference_results() -> None:
    config = PostprocessConfig.from_json(json.dumps(NAB_POSTPROCESS))
    raw, values = _stream(3000, channels=1, seed=9)
    windows = np.repeat(values[:, None, :], 4, axis=1)  # the newest sample is each window's last row
    rule = DecisionRule(THRESHOLD, config)
    got: dict[str, list[float]] = {"blocks": [], "singles": []}
    # Same data on two streams: one arrives in 500-window segments, one window at a time.
    for lo in range(0, 3000, 500):
        segments = [Segment("blocks", 0, np.arange(lo, lo + 500.0), 0.0)]
        segments += [Segment("singles", 500 + i, (float(lo + i),), 0.0) for i in range(500)]
        batch_raw = np.concatenate([raw[lo : lo + 500], raw[lo : lo + 500]])
        batch_windows = np.concatenate([windows[lo : lo + 500], windows[lo : lo + 500]])
        _, post = rule.decide(segments, batch_raw, batch_windows)
        assert post is not None
        got["blocks"].extend(post[:500].tolist())
        got["singles"].extend(post[500:].tolist())
    expected = _reference(config, raw, values)
    assert got["blocks"] == pytest.approx(expected, abs=1e-9)
    assert got["singles"] == expected.tolist()  # the per-window reference itself


def test_block_refuses_a_changed_channel_count() -> None:
    block = BlockPostprocessor(PostprocessConfig.from_json(json.dumps(NAB_POSTPROCESS)), THRESHOLD)
    raw, values = _stream(10, channels=2, seed=1)
    block.update_block("s", raw, values)
    with pytest.raises(ValueError, match="expected 2 values, got 1"):
        block.update_block("s", raw, values[:, :1])


def test_vectorised_tail_matches_the_reference_far_into_the_tail() -> None:
    z = np.array([1e-6, 0.5, 1.0, 3.0, 8.0, 29.9, 30.0, 37.5, 40.0, 1e3])
    assert log10_tails(z) == pytest.approx([log10_tail(float(v)) for v in z], rel=1e-12)


def _random_config(rng: np.random.Generator) -> PostprocessConfig:
    long_window = int(rng.integers(20, 600))
    return PostprocessConfig(
        method=str(rng.choice(["likelihood", "ratio"])),
        short_window=int(rng.integers(1, 20)),
        long_window=long_window,
        warmup=int(rng.integers(0, 120)),
        log_scores=bool(rng.integers(0, 2)),
        min_std=float(rng.choice([0.01, 0.1])),
        half_log10=float(rng.choice([3.0, 5.0])),
        suppress_level=float(rng.choice([0.5, 0.6, 0.9])),
        suppress_rows=int(rng.choice([0, 1, 5, 50, 300])),
        suppress_factor=float(rng.choice([0.0, 0.25, 1.0])),
        suppress_rearm_ratio=float(rng.choice([0.0, 1.1, 1.2, 3.0])),
        hold_rows=int(rng.choice([0, 5, 30])),
        long_fraction=float(rng.choice([0.0, 0.5])),
        long_window_max=max(long_window, int(rng.choice([600, 2000]))),
        spatial_tolerance=float(rng.choice([0.0, 0.05])),
        seasonal_lag=int(rng.choice([0, 24, 100])),
        reference_window=int(rng.choice([50, 200])),
        value_short_window=int(rng.choice([1, 12])),
        record_window=int(rng.choice([0, 1, 30, 100])),
        record_history=int(rng.choice([10, 300])),
        record_min_history=int(rng.choice([1, 10])),
    )


def test_block_equals_the_reference_for_random_settings_streams_and_block_sizes() -> None:
    # A seeded sweep over the whole supported setting space (1,000 such trials found no decision that
    # differs and no score more than 1e-7 apart; spikes of 3,000 cost the running sums a few 1e-9).
    rng = np.random.default_rng(2026)
    for _ in range(120):
        config = _random_config(rng)
        assert supports(config)
        n, channels = int(rng.integers(50, 2000)), int(rng.integers(1, 3))
        raw = np.abs(rng.standard_t(3, size=n)).astype(np.float32)
        for at in rng.integers(0, n, size=int(rng.integers(0, 12))):
            raw[at : at + int(rng.integers(1, 20))] += float(rng.choice([3.0, 30.0, 300.0, 3000.0]))
        values = (50.0 + 0.1 * rng.normal(size=(n, channels)).cumsum(axis=0)).astype(np.float32)

        expected = _reference(config, raw, values)
        block = BlockPostprocessor(config, THRESHOLD)
        parts, start = [], 0
        while start < n:
            stop = min(n, start + int(rng.choice([1, 2, 3, 17, 64, 500])))
            parts.append(block.update_block("s", raw[start:stop], values[start:stop]))
            start = stop
        got = np.concatenate(parts)

        assert got == pytest.approx(expected, abs=1e-7), config
        level = config.decision_level
        assert np.array_equal(got >= level, expected >= level), config


def test_a_plateau_of_equal_raw_scores_never_re_arms_in_either_implementation() -> None:
    # Equal raw scores: the running sum (reference) and the prefix sums (blocks) round the 3-row averages
    # differently, so a ratio near 1 would let rounding decide; from REARM_MIN_RATIO on, both damp alike.
    config = PostprocessConfig(
        method="ratio", short_window=3, warmup=0, log_scores=False, suppress_level=0.5, suppress_rows=50,
        suppress_factor=0.0, suppress_rearm_ratio=REARM_MIN_RATIO,
    )  # fmt: skip
    raw = np.full(300, 0.1, dtype=np.float32)
    values = np.zeros((300, 1), dtype=np.float32)
    reference = StreamPostprocessor(config, 0.01)
    expected = np.array([reference.update(float(r)) for r in raw.tolist()])
    whole = BlockPostprocessor(config, 0.01).update_block("s", raw, values)
    alarms = np.flatnonzero(expected >= 0.5)
    assert alarms.tolist() == list(range(0, 300, 51))  # an alarm, 50 damped rows, the next alarm, ...
    assert np.flatnonzero(whole >= 0.5).tolist() == alarms.tolist()


@pytest.mark.parametrize(("window", "history"), [(100, 8000), (100, 1000), (20, 200)])
def test_record_after_a_huge_value_stays_quiet_on_a_flat_line(window: int, history: int) -> None:
    # An error code (2^32) once, then a flat line (1.38), in both paths: the huge value's rounding
    # error must not make the flat line look like it left its range, in the running sum (reference) or in
    # one block much longer than the history (the twin).
    n = 3 * (window + history) + 500
    values = np.full((n, 1), 1.38, dtype=np.float32)
    values[:400, 0] = 1.37
    values[400, 0] = 4294967295.0
    raw = np.zeros(n, dtype=np.float32)
    config = PostprocessConfig.from_json(
        json.dumps({"method": "ratio", "short_window": 1, "warmup": 0, "log_scores": False,
                    "record_window": window, "record_history": history, "record_min_history": history})
    )  # fmt: skip
    reference = StreamPostprocessor(config, 1e6)
    rows = values.tolist()
    expected = np.array([reference.update(0.0, rows[i]) for i in range(n)])
    whole = BlockPostprocessor(config, 1e6).update_block("s", raw, values)
    quiet_from = 400 + window + history  # the huge value has left the mean and then the history
    assert not (expected[quiet_from:] >= 0.5).any()
    assert not (whole[quiet_from:] >= 0.5).any()
    assert np.array_equal(whole >= 0.5, expected >= 0.5)


@pytest.mark.parametrize("level", [0.3, 1.0 / 3.0])
def test_record_ignores_a_flat_line_whose_mean_rounds_off_its_value(level: float) -> None:
    # In float64 (the API takes any floats) 100 x 0.3 or 100 x 1/3 is not exact: the window's mean lands a
    # rounding step above or below the value itself, and only the relative guard keeps that from firing.
    n = 1500
    values = np.full((n, 1), level)
    config = PostprocessConfig.from_json(
        json.dumps({"method": "ratio", "short_window": 1, "warmup": 0, "log_scores": False,
                    "record_window": 100, "record_history": 1000, "record_min_history": 1000})
    )  # fmt: skip
    reference = StreamPostprocessor(config, 1e6)
    expected = np.array([reference.update(0.0, [level]) for _ in range(n)])
    whole = BlockPostprocessor(config, 1e6).update_block("s", np.zeros(n), values)
    assert not (expected >= 0.5).any()
    assert not (whole >= 0.5).any()
