"""Online, causal post-processing: raw model scores of one stream in, an anomaly score in [0, 1] out.

The ONNX model's raw score is in "multiples of a typical training residual". How large a normal score is
still drifts from stream to stream and over time, so one fixed threshold on raw scores is fragile. Two
methods map raw scores to ``[0, 1]`` using only the scores seen so far (never labels, never the future):

``likelihood`` (HTM-style anomaly likelihood, Ahmad et al. 2017)
    Keep the moving average of the last ``short_window`` raw scores (optionally ``log1p``-compressed, so
    one huge spike does not dominate the statistics). Keep the mean and variance of those averages over
    the last ``long_window`` rows, *excluding* the current ones. The current average's Gaussian tail
    probability ``Q(z)`` says how unusual it is for this stream; the output is
    ``L / (L + half_log10)`` with ``L = -log10 Q(z)``, so ``0.5`` means a tail probability of
    ``10**-half_log10`` and the map never saturates (a corpus-wide threshold sweep keeps its ordering).

``ratio``
    The moving average ``m`` of the last ``short_window`` raw scores against the model's calibrated raw
    threshold ``t``: ``m / (m + t)``, so ``0.5`` is exactly the calibrated threshold. For long anomalous
    segments (SKAB), where smoothing pays and the training-set threshold is the right reference.

Then, optionally, repeated alarms are damped: after a score ``>= suppress_level`` every score of the next
``suppress_rows`` rows is multiplied by ``suppress_factor``. One alarm per event is what an operator
(and NAB, which counts only the first detection in a window and charges every false one) wants.

A stream outputs ``0`` until it has seen ``warmup`` raw scores. The parameters travel in the model's
``edge_postprocess`` metadata (docs/contracts.md §1), so the device needs no side configuration.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Final

from .errors import ModelError

METADATA_KEY: Final = "edge_postprocess"
METHODS: Final = ("likelihood", "ratio")
_LOG10: Final = math.log(10.0)
_SQRT2: Final = math.sqrt(2.0)
# Beyond this z, erfc underflows in float64; the asymptotic tail expansion is exact to < 1e-3 there.
_ASYMPTOTIC_Z: Final = 30.0


@dataclass(frozen=True)
class PostprocessConfig:
    method: str = "likelihood"
    short_window: int = 10
    long_window: int = 8000
    warmup: int = 100
    log_scores: bool = True
    min_std: float = 0.01
    half_log10: float = 5.0
    suppress_level: float = 1.0
    suppress_rows: int = 0
    suppress_factor: float = 1.0
    decision_level: float = 0.5

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ModelError(f"edge_postprocess method must be one of {list(METHODS)}, got {self.method!r}")
        for name in ("short_window", "long_window"):
            if getattr(self, name) < 1:
                raise ModelError(f"edge_postprocess {name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup", "suppress_rows"):
            if getattr(self, name) < 0:
                raise ModelError(f"edge_postprocess {name} must be >= 0, got {getattr(self, name)}")
        if not (self.min_std > 0 and self.half_log10 > 0):
            raise ModelError("edge_postprocess min_std and half_log10 must be > 0")
        if not 0.0 <= self.suppress_factor <= 1.0:
            raise ModelError(
                f"edge_postprocess suppress_factor must be in [0, 1], got {self.suppress_factor}"
            )
        if not 0.0 < self.decision_level <= 1.0:
            raise ModelError(f"edge_postprocess decision_level must be in (0, 1], got {self.decision_level}")

    @classmethod
    def from_json(cls, text: str) -> PostprocessConfig:
        """Parse the ``edge_postprocess`` metadata value; unknown keys or wrong types are refused."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError:
            raise ModelError(f"{METADATA_KEY} is not JSON: {text!r}") from None
        if not isinstance(raw, dict):
            raise ModelError(f"{METADATA_KEY} must be a JSON object, got {text!r}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ModelError(f"{METADATA_KEY} has unknown keys: {unknown}")
        defaults = cls()
        values: dict[str, object] = {}
        for name, given in raw.items():
            expected = type(getattr(defaults, name))
            # JSON has one number type: an integral float setting may arrive as an int.
            value = float(given) if expected is float and type(given) is int else given
            if type(value) is not expected:
                raise ModelError(
                    f"{METADATA_KEY} {name} must be {expected.__name__}, got {type(value).__name__}"
                )
            values[name] = value
        return cls(**values)  # type: ignore[arg-type]

    @classmethod
    def from_metadata(cls, extra_metadata: Mapping[str, str]) -> PostprocessConfig:
        """The model's own settings, or the defaults for a model that carries none."""
        text = extra_metadata.get(METADATA_KEY)
        return cls() if text is None else cls.from_json(text)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def log10_tail(z: float) -> float:
    """``-log10 Q(z)`` for the standard normal tail ``Q``; accurate far into the tail (no underflow)."""
    if z < _ASYMPTOTIC_Z:
        q = 0.5 * math.erfc(z / _SQRT2)
        return -math.log10(q) if q > 0.0 else _asymptotic(z)
    return _asymptotic(z)


def _asymptotic(z: float) -> float:
    # log Q(z) ~ -z^2/2 - log(z * sqrt(2 pi)) for large z.
    return (0.5 * z * z + math.log(z * math.sqrt(2.0 * math.pi))) / _LOG10


class StreamPostprocessor:
    """The state of one stream. ``update`` takes raw scores in time order and returns ``[0, 1]`` scores."""

    def __init__(self, config: PostprocessConfig, threshold: float) -> None:
        self.config = config
        self.threshold = threshold
        self._short: deque[float] = deque(maxlen=config.short_window)
        self._short_sum = 0.0
        self._long: deque[float] = deque()
        self._long_sum = 0.0
        self._long_sq = 0.0
        self._suppress_left = 0
        self.seen = 0

    def update(self, raw: float) -> float:
        cfg = self.config
        value = math.log1p(max(raw, 0.0)) if cfg.log_scores else raw
        if len(self._short) == self._short.maxlen:
            self._short_sum -= self._short[0]
        self._short.append(value)
        self._short_sum += value
        average = self._short_sum / len(self._short)
        self.seen += 1

        if cfg.method == "ratio":
            score = _ratio(average, math.log1p(self.threshold) if cfg.log_scores else self.threshold)
        else:
            score = self._likelihood(average)
            self._remember(average)
        if self.seen <= cfg.warmup:
            return 0.0
        return self._suppress(score)

    def _likelihood(self, average: float) -> float:
        n = len(self._long)
        if n < 2:
            return 0.0
        mean = self._long_sum / n
        variance = max(self._long_sq / n - mean * mean, 0.0)
        std = max(math.sqrt(variance), self.config.min_std)
        z = (average - mean) / std
        tail = log10_tail(z) if z > 0 else 0.0
        return tail / (tail + self.config.half_log10)

    def _remember(self, average: float) -> None:
        self._long.append(average)
        self._long_sum += average
        self._long_sq += average * average
        if len(self._long) > self.config.long_window:
            old = self._long.popleft()
            self._long_sum -= old
            self._long_sq -= old * old

    def _suppress(self, score: float) -> float:
        cfg = self.config
        if self._suppress_left > 0:
            self._suppress_left -= 1
            return score * cfg.suppress_factor
        if cfg.suppress_rows and score >= cfg.suppress_level:
            self._suppress_left = cfg.suppress_rows
        return score


def _ratio(average: float, threshold: float) -> float:
    if average <= 0.0:
        return 0.0
    return average / (average + max(threshold, 1e-12))


class Postprocessor:
    """Per-stream :class:`StreamPostprocessor` states for one model (reset when the model changes)."""

    def __init__(self, config: PostprocessConfig, threshold: float) -> None:
        self.config = config
        self.threshold = threshold
        self._streams: dict[str, StreamPostprocessor] = {}

    def update(self, stream: str, raw: float) -> float:
        state = self._streams.get(stream)
        if state is None:
            state = self._streams[stream] = StreamPostprocessor(self.config, self.threshold)
        return state.update(raw)

    def is_anomaly(self, score: float) -> bool:
        return score >= self.config.decision_level

    @property
    def streams(self) -> tuple[str, ...]:
        return tuple(self._streams)
