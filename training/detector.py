"""The anomaly detector: robust normalisation + a linear autoregressive forecaster, scored by its residual.

Everything here is plain numpy. Every term is a non-negative multiple of ``|linear function of the raw
window|``, so ``linear_form`` folds the whole score into one matrix (one MatMul, Add, Abs and a sum in the
ONNX graph ``training.export`` builds, in float32), and ``score_windows`` computes that same folded form
in numpy, so the score the edge computes is the score computed here. The interface the rest of training uses
is small on purpose (``DetectorConfig``, ``fit``, ``score_windows`` and the model's parameters) so that a
stronger detector can replace this one without touching loading, calibration or the entry point.

Score of a window ``x`` (``[window_length, n_channels]`` raw values), per channel ``c``::

    z            = (x - center) / scale                         robust per-channel normalisation
    forecast     = flatten(z[:-1]) @ weights + bias             ridge AR forecast of the last sample
    residual_c   = |z[-1] - forecast| / residual_scale          "did the last sample surprise the model?"
    deviation_c  = |z[-1] - mean(z[:-1])| / deviation_scale     "did it jump away from the recent level?"
    jump_k,c     = |mean(z[-k:]) - mean(z[:-k])| / jump_scale_k  for k in jump_lengths (multi-scale shifts)
    level_c      = |mean(z[-m:]) - level_center| / level_scale      "how far from the training level?"
    score        = sum_c (residual_c + mean_weight * deviation_c + jump_weight * sum_k jump_k,c)
                   + level_weight * max_c level_c

The level term (off by default) is for multichannel plant data whose anomalies are long shifts of level
(SKAB): its scale grows with the channel's linear drift over ``level_horizon`` rows of training, so a
slowly drifting temperature does not read as an anomaly while a flow that drops does.

Both terms are in units of their own typical training size, so a score of a few is normal and the
threshold (``training.calibrate``) is set from the training-window scores.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from training.data import sliding_windows
from training.errors import ConfigError, TooFewRowsError

DETECTOR_NAME: Final = "forecast-residual"
# 1.4826 * MAD estimates the standard deviation of normally distributed data.
_MAD_TO_STD: Final = 1.4826
MIN_TRAINING_WINDOWS: Final = 20
# Residual spreads are in normalised units (multiples of a channel's typical spread); below this they are
# float noise, and dividing by them would turn rounding into huge scores.
_Z_FLOOR: Final = 1e-6


@dataclass(frozen=True)
class DetectorConfig:
    window_length: int = 32
    # Ridge penalty on the AR weights, in units of the (unit-variance) normalised features.
    ridge_alpha: float = 1e-3
    mean_weight: float = 0.5
    jump_lengths: tuple[int, ...] = ()
    jump_weight: float = 0.0
    level_length: int = 1
    level_weight: float = 0.0
    level_horizon: float = 0.0

    def __post_init__(self) -> None:
        if self.window_length < 2:
            raise ConfigError(f"window_length must be at least 2, got {self.window_length}")
        for k in self.jump_lengths:
            if not 1 <= k < self.window_length:
                raise ConfigError(f"jump lengths must be in [1, window_length), got {k}")
        if not 1 <= self.level_length <= self.window_length:
            raise ConfigError(f"level_length must be in [1, window_length], got {self.level_length}")
        for name in ("jump_weight", "level_weight", "level_horizon"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.ridge_alpha > 0:
            raise ConfigError(f"ridge_alpha must be > 0, got {self.ridge_alpha}")
        if not self.mean_weight >= 0:
            raise ConfigError(f"mean_weight must be >= 0, got {self.mean_weight}")


@dataclass(frozen=True)
class ForecastResidualModel:
    """Fitted parameters, all arrays float64; exported folded into float32 constants (``linear_form``)."""

    window_length: int
    channels: tuple[str, ...]
    center: np.ndarray  # [c]
    scale: np.ndarray  # [c]
    weights: np.ndarray  # [(window_length - 1) * c, c], rows ordered (time, channel) like a C reshape
    bias: np.ndarray  # [c]
    residual_scale: np.ndarray  # [c]
    deviation_scale: np.ndarray  # [c]
    mean_weight: float
    ridge_alpha: float
    jump_lengths: tuple[int, ...] = ()
    jump_scales: tuple[np.ndarray, ...] = ()  # one [c] per jump length
    jump_weight: float = 0.0
    level_length: int = 1
    level_center: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [c]
    level_scale: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [c]
    level_weight: float = 0.0

    @property
    def name(self) -> str:
        return DETECTOR_NAME

    @property
    def n_channels(self) -> int:
        return len(self.channels)


def too_few_rows(segment_rows: Sequence[int], config: DetectorConfig) -> str | None:
    """Why segments of these row counts give too few training windows, or None when they give enough."""
    n_windows = sum(max(0, n - config.window_length + 1) for n in segment_rows)
    if n_windows >= MIN_TRAINING_WINDOWS:
        return None
    return (
        f"{sum(segment_rows)} training rows give {n_windows} windows of length {config.window_length}; "
        f"at least {MIN_TRAINING_WINDOWS} are needed "
        f"(a file needs {config.window_length + MIN_TRAINING_WINDOWS - 1} rows)"
    )


def fit(
    segments: Sequence[np.ndarray], channels: Sequence[str], config: DetectorConfig
) -> ForecastResidualModel:
    """Fit on training rows: one ``[n_rows, n_channels]`` float array per contiguous segment (file).

    Windows never span two segments, so the end of one file is never used to forecast the start of another.
    """
    n_channels = len(channels)
    for segment in segments:
        if segment.ndim != 2 or segment.shape[1] != n_channels:
            raise ValueError(f"segment shape {segment.shape} does not match {n_channels} channels")
    reason = too_few_rows([s.shape[0] for s in segments], config)
    if reason is not None:
        raise TooFewRowsError(reason)

    rows = np.concatenate([np.asarray(s, dtype=np.float64) for s in segments])
    center = np.median(rows, axis=0)
    scale = _robust_scale(rows - center, floor=0.0)

    windows = np.concatenate(
        [
            sliding_windows((np.asarray(s, dtype=np.float64) - center) / scale, config.window_length)
            for s in segments
        ]
    )
    past = windows[:, :-1, :].reshape(windows.shape[0], -1)
    last = windows[:, -1, :]
    weights, bias = _ridge(past, last, config.ridge_alpha)

    residual = last - (past @ weights + bias)
    deviation = last - windows[:, :-1, :].mean(axis=1)
    jump_scales = tuple(_robust_scale(_jump(windows, k), floor=_Z_FLOOR) for k in config.jump_lengths)
    level = windows[:, -config.level_length :, :].mean(axis=1)
    level_center = np.median(level, axis=0)
    level_scale = np.sqrt(
        level.std(axis=0) ** 2 + (_drift_per_row(segments, center, scale) * config.level_horizon) ** 2
    )
    level_scale = np.maximum(level_scale, _Z_FLOOR)
    return ForecastResidualModel(
        window_length=config.window_length,
        channels=tuple(channels),
        center=center,
        scale=scale,
        weights=weights,
        bias=bias,
        residual_scale=_robust_scale(residual, floor=_Z_FLOOR),
        deviation_scale=_robust_scale(deviation, floor=_Z_FLOOR),
        mean_weight=config.mean_weight,
        ridge_alpha=config.ridge_alpha,
        jump_lengths=config.jump_lengths,
        jump_scales=jump_scales,
        jump_weight=config.jump_weight,
        level_length=config.level_length,
        level_center=level_center,
        level_scale=level_scale,
        level_weight=config.level_weight,
    )


def _jump(z_windows: np.ndarray, k: int) -> np.ndarray:
    """Signed shift of the mean of the last ``k`` samples from the mean of the ones before them."""
    result: np.ndarray = z_windows[:, -k:, :].mean(axis=1) - z_windows[:, :-k, :].mean(axis=1)
    return result


def _drift_per_row(segments: Sequence[np.ndarray], center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Per-channel |slope| of a least-squares line through each segment (normalised units per row)."""
    slopes = []
    for segment in segments:
        z = (np.asarray(segment, dtype=np.float64) - center) / scale
        t = np.arange(z.shape[0], dtype=np.float64)
        t -= t.mean()
        denominator = float(t @ t)
        slopes.append(
            np.abs(t @ (z - z.mean(axis=0)) / denominator) if denominator > 0 else np.zeros(z.shape[1])
        )
    result: np.ndarray = np.max(slopes, axis=0)
    return result


@dataclass(frozen=True)
class LinearScoreForm:
    """The score as one affine map of the centred raw window, then ``|.|``, a sum and (optionally) a max.

    Every term of the score is ``k * |linear function of the window|`` with ``k >= 0`` (scales are > 0,
    weights >= 0), so all of them fold into the columns of one matrix::

        terms = |(flatten(x) - center) @ weights + bias|            [batch, n_terms]
        score = sum(terms[:, :n_summed]) + max(terms[:, n_summed:])  (the max only with the level term)

    The columns are: the forecast residual per channel, the mean jump per channel (``mean_weight > 0``),
    each multi-scale jump per channel (``jump_weight > 0``), then the level term per channel
    (``level_weight > 0``). Folded in float64, stored in float32: the ONNX graph and ``score_windows``
    compute exactly this, in float32. Centring first keeps the products small (a raw value of 1e5 times
    a large coefficient would lose the residual to float32 rounding); the subtraction is one cheap op.
    """

    center: np.ndarray  # float32 [window_length * n_channels]: per-channel centres tiled like flatten(x)
    weights: np.ndarray  # float32 [window_length * n_channels, n_terms]
    bias: np.ndarray  # float32 [n_terms]
    n_summed: int


def linear_form(model: ForecastResidualModel) -> LinearScoreForm:
    """Fold normalisation, forecast, scales and term weights of ``model`` into one ``LinearScoreForm``."""
    w, c = model.window_length, model.n_channels
    inv_scale = 1.0 / model.scale
    blocks: list[np.ndarray] = []  # each [w, c_in, c_out] on centred values
    biases: list[np.ndarray] = []

    residual = np.zeros((w, c, c))
    residual[:-1] = -model.weights.reshape(w - 1, c, c) * inv_scale[None, :, None]
    residual[-1] += np.diag(inv_scale)
    blocks.append(residual / model.residual_scale)
    biases.append(-model.bias / model.residual_scale)

    def mean_shift(split: int, factor: np.ndarray) -> np.ndarray:
        """``factor * (mean(x[split:]) - mean(x[:split])) / scale`` per channel."""
        rows = np.where(np.arange(w) >= split, 1.0 / (w - split), -1.0 / split)
        return rows[:, None, None] * np.diag(factor * inv_scale)[None, :, :]

    if model.mean_weight > 0:
        blocks.append(mean_shift(w - 1, model.mean_weight / model.deviation_scale))
        biases.append(np.zeros(c))
    if model.jump_weight > 0:
        for k, jump_scale in zip(model.jump_lengths, model.jump_scales, strict=True):
            blocks.append(mean_shift(w - k, model.jump_weight / jump_scale))
            biases.append(np.zeros(c))
    n_summed = sum(b.shape[2] for b in blocks)
    if model.level_weight > 0:
        m = model.level_length
        factor = model.level_weight / model.level_scale
        level = np.zeros((w, c, c))
        level[w - m :] = np.diag(factor * inv_scale / m)[None, :, :]
        blocks.append(level)
        biases.append(-factor * model.level_center)
    weights = np.concatenate(blocks, axis=2).reshape(w * c, -1)
    return LinearScoreForm(
        center=np.tile(model.center, w).astype(np.float32),
        weights=weights.astype(np.float32),
        bias=np.concatenate(biases).astype(np.float32),
        n_summed=n_summed,
    )


def score_windows(model: ForecastResidualModel, windows: np.ndarray) -> np.ndarray:
    """Scores (``[batch]``, float32 values in a float64 array) of raw windows ``[batch, w, n_channels]``.

    The numpy twin of the exported ONNX graph: the windows are cast to float32 (the edge feeds float32)
    and scored through ``linear_form`` in float32, op for op as the graph does, so calibration sees the
    scores the edge will compute. ``reference_scores`` is the documented formula in float64.
    """
    _check_shape(model, windows)
    form = linear_form(model)
    x = np.asarray(windows, dtype=np.float32)
    flat = x.reshape(x.shape[0], form.center.shape[0]) - form.center
    terms = np.abs(flat @ form.weights + form.bias)
    scores: np.ndarray = terms[:, : form.n_summed].sum(axis=1, dtype=np.float32)
    if form.n_summed < terms.shape[1]:
        scores = scores + terms[:, form.n_summed :].max(axis=1)
    return scores.astype(np.float64)


def reference_scores(model: ForecastResidualModel, windows: np.ndarray) -> np.ndarray:
    """The module docstring's formula term by term, in float64 (``score_windows`` folds it)."""
    residual, deviation = channel_terms(model, windows)
    per_channel = residual + model.mean_weight * deviation
    z = (np.asarray(windows, dtype=np.float64) - model.center) / model.scale
    for k, jump_scale in zip(model.jump_lengths, model.jump_scales, strict=True):
        per_channel = per_channel + model.jump_weight * np.abs(_jump(z, k)) / jump_scale
    scores: np.ndarray = per_channel.sum(axis=1)
    if model.level_weight > 0:
        level = np.abs(z[:, -model.level_length :, :].mean(axis=1) - model.level_center) / model.level_scale
        scores = scores + model.level_weight * level.max(axis=1)
    return scores


def _check_shape(model: ForecastResidualModel, windows: np.ndarray) -> None:
    shape = np.shape(windows)
    expected = (model.window_length, model.n_channels)
    if len(shape) != 3 or tuple(shape[1:]) != expected:
        raise ValueError(f"windows must be [batch, {expected[0]}, {expected[1]}], got shape {tuple(shape)}")


def channel_terms(model: ForecastResidualModel, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two per-channel score terms, ``[batch, n_channels]`` each: forecast residual and level jump."""
    _check_shape(model, windows)
    x = np.asarray(windows, dtype=np.float64)
    z = (x - model.center) / model.scale
    past = z[:, :-1, :]
    last = z[:, -1, :]
    forecast = (
        past.reshape(x.shape[0], (model.window_length - 1) * model.n_channels) @ model.weights + model.bias
    )
    residual = np.abs(last - forecast) / model.residual_scale
    deviation = np.abs(last - past.mean(axis=1)) / model.deviation_scale
    return residual, deviation


def _ridge(features: np.ndarray, targets: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge least squares with an unpenalised intercept: minimises mean squared error + alpha * |W|^2."""
    feature_mean = features.mean(axis=0)
    target_mean = targets.mean(axis=0)
    centred = features - feature_mean
    n = features.shape[0]
    gram = centred.T @ centred / n + alpha * np.eye(features.shape[1])
    weights = np.linalg.solve(gram, centred.T @ (targets - target_mean) / n)
    return weights, target_mean - feature_mean @ weights


def _robust_scale(deviations: np.ndarray, *, floor: float) -> np.ndarray:
    """Per-column spread of ``deviations``: 1.4826 * MAD, else the std, else 1 (each used if > ``floor``).

    The fallbacks keep the division in the graph finite for flat or heavily quantised channels, whose MAD
    is zero although the channel may still vary now and then.
    """
    mad = _MAD_TO_STD * np.median(np.abs(deviations - np.median(deviations, axis=0)), axis=0)
    std = deviations.std(axis=0)
    return np.where(mad > floor, mad, np.where(std > floor, std, 1.0))
