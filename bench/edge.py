"""``python -m bench.edge``: measure the edge component on one NAB series and one trained model.

Everything is measured in one run, on the same model and data, pinned to one core:
- ``raw_ort_samples_per_s``: ONNX Runtime alone on pre-built batches of windows (the ceiling);
- ``naive_samples_per_s``: the naive component, one ``json.loads`` + one ``session.run`` per sample;
- ``edge_samples_per_s``: the component's whole path (parse, window, infer, decide, spool), in process,
  on columnar batch messages; ``edge_single_message_samples_per_s`` is the same with one sample per message;
- ``latency_p50_ms`` / ``latency_p99_ms``: arrival to decision with single-sample messages at 1,000/s;
- ``streams``: the most concurrent streams (1 sample/s each) whose decisions stay within 10 ms p99;
- ``rss_mb``: peak RSS of the real ``python -m anomaly_detector`` process replaying the whole series.
Writes bench/results.json and docs/benchmarks.md.
"""

from __future__ import annotations

import collections
import csv
import json
import os
import platform
import queue
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from greengrass_components.anomaly_detector.app import DetectorApp
from greengrass_components.anomaly_detector.events import EventBuilder
from greengrass_components.anomaly_detector.forwarder import Forwarder
from greengrass_components.anomaly_detector.messages import MessageParser
from greengrass_components.anomaly_detector.model import LoadedModel, load_model
from greengrass_components.anomaly_detector.scoring import BatchPolicy, ScoringEngine
from greengrass_components.anomaly_detector.sources import Inbound, _parse
from greengrass_components.anomaly_detector.spool import Spool
from greengrass_components.anomaly_detector.transport import InMemoryTransport

REPO = Path(__file__).resolve().parents[1]
SERIES = (
    REPO.parent
    / "shared"
    / "data"
    / "nab"
    / "data"
    / "realKnownCause"
    / "machine_temperature_system_failure.csv"
)
TRAIN_FRACTION = 0.15
BLOCK = 512  # samples per columnar batch message
REPEAT = 8
LATENCY_TARGET_MS = 10.0
TARGETS = {"edge_vs_raw": 0.5, "edge_vs_naive": 20.0, "latency_p99_ms": 5.0, "rss_mb": 150.0, "streams": 1000}


def pin_one_core() -> int:
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def load_series() -> tuple[list[str], np.ndarray, np.ndarray]:
    with SERIES.open() as fh:
        rows = list(csv.reader(fh))[1:]
    stamps = [r[0] for r in rows]
    epoch = np.array([datetime.fromisoformat(s).replace(tzinfo=UTC).timestamp() for s in stamps])
    return stamps, epoch, np.array([float(r[1]) for r in rows], dtype=np.float32)


def train(work: Path) -> Path:
    from training.train import main as train_main  # noqa: PLC0415 - training is only needed here

    lines = SERIES.read_text().splitlines()
    n = int((len(lines) - 1) * TRAIN_FRACTION)
    (work / "train").mkdir()
    (work / "train" / "slice.csv").write_text("\n".join(lines[: n + 1]) + "\n")
    if train_main(["--train", str(work / "train"), "--model_dir", str(work / "model")]) != 0:
        raise RuntimeError("training failed")
    return work / "model" / "model.onnx"


def timed(fn: Callable[[], int], min_s: float = 1.5) -> float:
    """Items per second over repeated calls for at least ``min_s``."""
    fn()  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_s:
        done += fn()
    return done / (time.perf_counter() - start)


def bench_raw_ort(model: LoadedModel, values: np.ndarray) -> float:
    w = model.metadata.window_length
    windows = np.lib.stride_tricks.sliding_window_view(values, w)[:, :, None].astype(np.float32)
    batches = [np.ascontiguousarray(windows[i : i + 256]) for i in range(0, len(windows) - 256, 256)]
    session = model.session
    index = [0]

    def run() -> int:
        batch = batches[index[0] % len(batches)]
        index[0] += 1
        session.run(["score"], {"window": batch})
        return len(batch)

    return timed(run)


def bench_naive(model: LoadedModel, messages: list[bytes]) -> float:
    w, threshold, session = model.metadata.window_length, model.metadata.threshold, model.session
    window: collections.deque[float] = collections.deque(maxlen=w)
    position = [0]

    def run() -> int:
        for _ in range(1000):
            msg = json.loads(messages[position[0] % len(messages)])
            position[0] += 1
            window.append(float(msg["values"]["value"]))
            if len(window) == w:
                x = np.array(window, dtype=np.float32).reshape(1, w, 1)
                (score,) = session.run(["score"], {"window": x})
                _ = bool(score[0] > threshold)
        return 1000

    return timed(run)


class ListPayloadSource:
    def __init__(self, payloads: list[bytes]) -> None:
        self._payloads = payloads
        self._next = 0

    @property
    def finished(self) -> bool:
        return self._next >= len(self._payloads)

    def poll(self, timeout_s: float, parser: MessageParser) -> Inbound | None:
        if self._next >= len(self._payloads):
            return None
        payload = self._payloads[self._next]
        self._next += 1
        return _parse(parser, payload, None)

    def close(self) -> None:
        pass


class PacedQueueSource:
    """Payloads pushed by a producer thread, stamped on arrival, like the MQTT and IPC sources."""

    def __init__(self) -> None:
        self.queue: queue.Queue[tuple[bytes, float]] = queue.Queue()

    @property
    def finished(self) -> bool:
        return False

    def poll(self, timeout_s: float, parser: MessageParser) -> Inbound | None:
        try:
            payload, arrived = self.queue.get(timeout=max(timeout_s, 0.0))
        except queue.Empty:
            return None
        return _parse(parser, payload, None, arrived)

    def close(self) -> None:
        pass


def make_app(model: LoadedModel, source: Any, spool_path: Path) -> tuple[DetectorApp, Spool]:
    spool = Spool(spool_path)
    app = DetectorApp(
        engine=ScoringEngine(model, batch_size=256, max_streams=1_000_000),
        source=source,
        spool=spool,
        forwarder=Forwarder(spool, InMemoryTransport()),
        events=EventBuilder(thing_name="bench"),
        thing_name="bench",
        anomaly_topic="edge/bench/anomalies",
        health_topic="edge/bench/health",
        policy=BatchPolicy(max_batch=256, max_wait_s=0.05, latency_budget_s=0.001),
        drain_timeout_s=5.0,
    )
    return app, spool


def bench_edge(
    model: LoadedModel, payloads: list[bytes], work: Path, name: str, samples: int
) -> tuple[float, int]:
    app, spool = make_app(model, ListPayloadSource(payloads), work / f"{name}.db")
    start = time.perf_counter()
    stats = app.run()
    elapsed = time.perf_counter() - start
    spool.close()
    if stats.samples_in != samples:
        raise RuntimeError(f"{name}: {stats.samples_in} samples in, expected {samples}")
    return samples / elapsed, stats.anomalies_spooled


def paced_run(
    model: LoadedModel,
    work: Path,
    name: str,
    *,
    streams: int,
    rate: float,
    duration_s: float,
    epoch: np.ndarray,
    values: np.ndarray,
) -> dict[str, float | None]:
    """``streams`` streams sharing ``rate`` samples/s in total; returns decision latency percentiles."""
    source = PacedQueueSource()
    app, spool = make_app(model, source, work / f"{name}.db")
    w = model.metadata.window_length
    # Fill every window first (not timed): otherwise the first window_length samples decide nothing.
    for s in range(streams):
        body = {"stream": f"s{s}", "timestamps": epoch[:w].tolist(), "values": {"value": values[:w].tolist()}}
        source.queue.put((json.dumps(body).encode(), time.monotonic()))
    stop = threading.Event()
    runner = threading.Thread(target=app.run, args=(stop,))
    runner.start()
    while not source.queue.empty():
        time.sleep(0.01)
    time.sleep(0.2)
    app.latency = type(app.latency)()  # measure the paced phase only
    total = int(rate * duration_s)
    start = time.monotonic()
    for i in range(total):
        s, k = i % streams, w + i // streams
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        body = {
            "stream": f"s{s}",
            "timestamp": float(epoch[k % len(epoch)]) + k * 1e-3,
            "values": {"value": float(values[k % len(values)])},
        }
        source.queue.put((json.dumps(body).encode(), time.monotonic()))
    time.sleep(0.2)
    stop.set()
    runner.join()
    spool.close()
    return app.latency.percentiles_ms()


def component_rss_mb(model_path: Path, work: Path) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    done = subprocess.run(
        [sys.executable, "-m", "anomaly_detector", "--thing-name", "bench", "--model", str(model_path),
         "--source", "file", "--file", str(SERIES), "--stream", "machine_temperature",
         "--transport", "memory", "--spool", str(work / "rss.db"), "--health-interval-s", "0"],
        cwd=REPO / "greengrass_components", capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"component failed: {done.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    summary = json.loads(done.stdout)
    # ru_maxrss of children is the largest child so far; the component is the biggest child we start.
    return max(after, before) / 1024.0, float(summary["samples_per_s"])


def main() -> int:
    cpu = pin_one_core()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-edge-") as tmp:
        work = Path(tmp)
        model_path = train(work)
        model = load_model(model_path)
        _stamps, one_epoch, one_values = load_series()
        # The series replayed REPEAT times back to back (later copies shifted in time) so fixed costs
        # (threads, final drain) do not dominate the throughput numbers.
        span = one_epoch[-1] - one_epoch[0] + 300.0
        epoch = np.concatenate([one_epoch + r * span for r in range(REPEAT)])
        values = np.tile(one_values, REPEAT)
        n = len(values)
        singles = [
            json.dumps(
                {"stream": "machine_temperature", "timestamp": float(t), "values": {"value": float(v)}}
            ).encode()
            for t, v in zip(epoch, values, strict=True)
        ]
        blocks = [
            json.dumps(
                {"stream": "machine_temperature", "timestamps": epoch[i : i + BLOCK].tolist(),
                 "values": {"value": values[i : i + BLOCK].tolist()}}
            ).encode()
            for i in range(0, n, BLOCK)
        ]  # fmt: skip
        raw = bench_raw_ort(model, one_values)
        naive = bench_naive(model, singles)
        edge, events = bench_edge(model, blocks, work, "edge", n)
        edge_single, _ = bench_edge(model, singles, work, "edge-single", n)
        latency = paced_run(
            model, work, "latency", streams=1, rate=1000.0, duration_s=3.0, epoch=epoch, values=values
        )
        stream_results: dict[int, float | None] = {}
        best = 0
        for count in (250, 500, 1000, 2000, 4000, 8000):
            p99 = paced_run(
                model, work, f"streams-{count}", streams=count, rate=float(count), duration_s=3.0,
                epoch=epoch, values=values,
            )["p99"]  # fmt: skip
            stream_results[count] = p99
            if p99 is None or p99 > LATENCY_TARGET_MS:
                break
            best = count
        rss_mb, cli_rate = component_rss_mb(model_path, work)
    results = {
        "edge_samples_per_s": round(edge),
        "edge_single_message_samples_per_s": round(edge_single),
        "raw_ort_samples_per_s": round(raw),
        "naive_samples_per_s": round(naive),
        "latency_p50_ms": latency["p50"],
        "latency_p99_ms": latency["p99"],
        "rss_mb": round(rss_mb, 1),
        "streams": best,
        "streams_p99_ms": {str(k): v for k, v in stream_results.items()},
        "cli_file_replay_samples_per_s": round(cli_rate),
        "edge_vs_raw": round(edge / raw, 3),
        "edge_vs_naive": round(edge / naive, 1),
        "events_spooled": events,
        "targets": TARGETS,
        "data": {"series": str(SERIES.relative_to(REPO.parent)), "samples": n, "repeats": REPEAT,
                 "train_fraction": TRAIN_FRACTION, "window_length": model.metadata.window_length,
                 "block_samples": BLOCK},
        "machine": {"cpu_pinned": cpu, "cpus_visible": os.cpu_count(),
                    "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(),
                    "onnxruntime": ort.__version__, "platform": platform.platform()},
        "bench_seconds": round(time.perf_counter() - started, 1),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }  # fmt: skip
    (REPO / "bench" / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (REPO / "docs" / "benchmarks.md").write_text(render(results))
    sys.stdout.write(json.dumps(results, indent=2) + "\n")
    return 0


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def render(r: dict[str, Any]) -> str:
    t = r["targets"]
    vs_raw = (
        f"{r['edge_vs_raw']}x raw (target {t['edge_vs_raw']}x: {_met(r['edge_vs_raw'] >= t['edge_vs_raw'])})"
    )
    vs_naive = (
        f"{r['edge_vs_naive']}x naive (target {t['edge_vs_naive']}x: "
        f"{_met(r['edge_vs_naive'] >= t['edge_vs_naive'])})"
    )
    p99_ok = _met((r["latency_p99_ms"] or 1e9) <= t["latency_p99_ms"])
    rows = [
        (
            "edge_samples_per_s (columnar batches of 512)",
            f"{r['edge_samples_per_s']:,}",
            f"{vs_raw}; {vs_naive}",
        ),
        (
            "edge_single_message_samples_per_s",
            f"{r['edge_single_message_samples_per_s']:,}",
            "1 sample/message",
        ),
        ("raw_ort_samples_per_s", f"{r['raw_ort_samples_per_s']:,}", "the ceiling"),
        ("naive_samples_per_s", f"{r['naive_samples_per_s']:,}", "one session.run per sample"),
        ("latency_p50_ms @ 1,000/s", f"{r['latency_p50_ms']}", ""),
        ("latency_p99_ms @ 1,000/s", f"{r['latency_p99_ms']}", f"<= {t['latency_p99_ms']} ({p99_ok})"),
        (
            "rss_mb (component process)",
            f"{r['rss_mb']}",
            f"<= {t['rss_mb']} ({_met(r['rss_mb'] <= t['rss_mb'])})",
        ),
        (
            "streams within 10 ms p99",
            f"{r['streams']:,}",
            f">= {t['streams']:,} ({_met(r['streams'] >= t['streams'])})",
        ),
    ]
    table = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
    m = r["machine"]
    return f"""# Edge benchmark

`make bench` (`python -m bench.edge`) measured these in one run ({r["measured_at"]},
{r["bench_seconds"]} s), on the same model and data: a model trained with `training.train` on the first 15% of
`{r["data"]["series"]}` (window {r["data"]["window_length"]}), then the whole series replayed
{r["data"]["repeats"]} times back to back ({r["data"]["samples"]:,} samples). The process is pinned to one
core; ONNX Runtime uses one thread. Raw numbers: `bench/results.json`.

| metric | value | target |
|---|---|---|
{table}

Streams: p99 decision latency per stream count (each stream 1 sample/s): {r["streams_p99_ms"]}.
The CLI (`python -m anomaly_detector --source file`, CSV parsing included) replayed the series at
{r["cli_file_replay_samples_per_s"]:,} samples/s.

What each number is:
- **edge**: `DetectorApp` in process, fed pre-encoded JSON messages: parse, per-stream windows, adaptive
  micro-batches through ONNX Runtime, decisions, event merging, and a real sqlite spool on disk.
- **raw ORT**: `session.run` on pre-built batches of 256 windows, nothing else.
- **naive**: `json.loads` + a deque window + one `session.run` per sample.
- **latency**: single-sample messages stamped on arrival (as the MQTT/IPC sources do) at 1,000/s;
  arrival -> decision.

Machine: {m["processor"]}, {m["cpus_visible"]} visible CPUs (pinned to CPU {m["cpu_pinned"]}),
Python {m["python"]}, onnxruntime {m["onnxruntime"]}, {m["platform"]}.

Noise: the machine has 2 cores shared with other jobs, so throughput varies by roughly +-15% between runs and
p99 latencies by more (a scheduler hiccup of a few ms lands directly in p99). Compare ratios measured in the
same run, not absolute numbers across runs.
"""


if __name__ == "__main__":
    sys.exit(main())
