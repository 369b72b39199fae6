"""Component configuration: one validated, frozen object built from the CLI and the environment.

On a device, the recipe's Run script passes the configuration knobs as arguments (topics, batch size)
and ``--kernel-root``; the model itself is NOT an argument there: it is read from the component's
Greengrass configuration key ``model`` over IPC, so a new model is a configuration change, not a restart
(AWS-FACTS §2.9).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

from .errors import ConfigError, MessageError
from .events import IOT_CORE_MAX_MESSAGE_BYTES, MAX_EVENT_BYTES, MIN_EVENT_BYTES
from .forwarder import DEFAULT_ACK_MAX_RESENDS, MIN_ACK_TIMEOUT_S
from .messages import check_stream
from .spool import IN_MEMORY, SPOOL_POLICIES, SpoolPolicy
from .transport import MqttSettings, TlsSettings

ENV_THING_NAME = "AWS_IOT_THING_NAME"

MODEL_COMPONENT = "com.edgeml.AnomalyModel"
MODEL_FILE = "model.onnx"
DEFAULT_SENSOR_TOPIC = "sensors/#"
DEFAULT_ANOMALY_TOPIC = "edge/{thingName}/anomalies"
DEFAULT_HEALTH_TOPIC = "edge/{thingName}/health"
DEFAULT_ACK_TOPIC = "edge/{thingName}/acks"

SourceKind = Literal["file", "mqtt", "ipc"]
TransportKind = Literal["mqtt", "ipc", "memory"]
SOURCES: tuple[SourceKind, ...] = ("file", "mqtt", "ipc")
TRANSPORTS: tuple[TransportKind, ...] = ("mqtt", "ipc", "memory")

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
# Greengrass recipe variable or our own placeholder; both are filled with the thing name.
_THING_PLACEHOLDERS = ("{iot:thingName}", "{thingName}")


@dataclass(frozen=True)
class ModelRef:
    """The ``model`` key merged into this component's configuration by a deployment (contracts §3)."""

    component: str
    version: str
    sha256: str | None = None
    model_version: str | None = None

    @classmethod
    def from_config(cls, value: Mapping[str, object]) -> ModelRef:
        # GetConfiguration on a map key returns the map itself; accept the wrapped form too.
        inner = value.get("model")
        if isinstance(inner, Mapping) and "version" not in value:
            value = inner
        component = value.get("component", MODEL_COMPONENT)
        version = value.get("version")
        sha256 = value.get("sha256") or None
        model_version = value.get("modelVersion") or None
        if not isinstance(component, str) or not component or "/" in component:
            raise ConfigError(f"model.component must be a component name, got {component!r}")
        if not isinstance(version, str) or not re.fullmatch(r"\d+\.\d+\.\d+", version):
            raise ConfigError(f"model.version must be a semver string like 1.0.3, got {version!r}")
        if sha256 is not None and (not isinstance(sha256, str) or not _SHA256.match(sha256)):
            raise ConfigError(f"model.sha256 must be 64 hex characters, got {sha256!r}")
        if model_version is not None and not isinstance(model_version, str):
            raise ConfigError(f"model.modelVersion must be a string, got {model_version!r}")
        return cls(component=component, version=version, sha256=sha256, model_version=model_version)

    def path(self, kernel_root: Path) -> Path:
        """Where the nucleus puts the model component's artifact (contracts §3)."""
        return kernel_root / "packages" / "artifacts" / self.component / self.version / MODEL_FILE


@dataclass(frozen=True)
class ComponentConfig:
    thing_name: str
    source: SourceKind
    transport: TransportKind
    model_path: Path | None = None
    model_sha256: str | None = None
    kernel_root: Path | None = None
    file_path: Path | None = None
    stream: str | None = None
    speed: float = 0.0
    sensor_topic: str = DEFAULT_SENSOR_TOPIC
    anomaly_topic: str = DEFAULT_ANOMALY_TOPIC
    health_topic: str = DEFAULT_HEALTH_TOPIC
    # Ack mode (docs/contracts.md §6c): 0 = off, a row is deleted once the transport confirmed it.
    ack_timeout_s: float = 0.0
    ack_topic: str = DEFAULT_ACK_TOPIC
    ack_max_resends: int = DEFAULT_ACK_MAX_RESENDS
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    batch_size: int = 256
    max_wait_ms: float = 50.0
    latency_budget_ms: float = 1.0
    cooldown_s: float = 0.0
    event_burst: int = 10
    events_per_hour: float = 60.0
    max_event_windows: int = 360
    event_idle_s: float = 5.0
    max_event_bytes: int = MAX_EVENT_BYTES
    health_interval_s: float = 60.0
    spool_path: str = IN_MEMORY
    spool_max_bytes: int = 64 * 1024 * 1024
    spool_policy: SpoolPolicy = "drop_oldest"
    drain_timeout_s: float = 10.0
    max_message_bytes: int = 1024 * 1024
    max_streams: int = 100_000
    warm_start_rows: int = 1000
    model_poll_s: float = 0.0
    stats_json: Path | None = None
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        self._check_identity_and_kinds()
        self._check_topics()
        self._check_numbers()

    def _check_identity_and_kinds(self) -> None:
        if not self.thing_name or any(c in self.thing_name for c in "/+#"):
            raise ConfigError(
                f"thing name is required (--thing-name or ${ENV_THING_NAME}) and must not contain "
                f"'/', '+' or '#', got {self.thing_name!r}"
            )
        if self.source not in SOURCES:
            raise ConfigError(f"source must be one of {SOURCES}, got {self.source!r}")
        if self.transport not in TRANSPORTS:
            raise ConfigError(f"transport must be one of {TRANSPORTS}, got {self.transport!r}")
        if self.model_path is None and self.kernel_root is None:
            raise ConfigError(
                "give --model PATH, or --kernel-root to read the model from Greengrass configuration"
            )
        if self.model_sha256 is not None and not _SHA256.match(self.model_sha256):
            raise ConfigError(f"model sha256 must be 64 hex characters, got {self.model_sha256!r}")
        if self.source == "file" and (self.file_path is None or not self.stream):
            raise ConfigError("--source file needs --file CSV and --stream NAME")
        if self.stream is not None:
            try:
                check_stream(self.stream)
            except MessageError as exc:
                raise ConfigError(f"--stream: {exc}") from None

        if self.log_level.upper() not in _LOG_LEVELS:
            raise ConfigError(f"log level must be one of {_LOG_LEVELS}, got {self.log_level!r}")

    def _check_topics(self) -> None:
        topics = [("anomaly", self.anomaly_topic), ("health", self.health_topic)]
        if self.ack_timeout_s > 0:  # read only in ack mode
            topics.append(("ack", self.ack_topic))
        for name, topic in topics:
            if not topic or "+" in topic or "#" in topic or "{" in topic:
                raise ConfigError(
                    f"{name} topic must be a concrete topic (no wildcards/placeholders): {topic!r}"
                )
        if not self.sensor_topic:
            raise ConfigError("sensor topic must not be empty")

    def _check_numbers(self) -> None:
        for name, count in (
            ("batch size", self.batch_size),
            ("event burst", self.event_burst),
            ("max event windows", self.max_event_windows),
            ("spool max bytes", self.spool_max_bytes),
            ("max message bytes", self.max_message_bytes),
            ("max streams", self.max_streams),
            ("ack max resends", self.ack_max_resends),
        ):
            if count < 1:
                raise ConfigError(f"{name} must be >= 1, got {count}")
        if not MIN_EVENT_BYTES <= self.max_event_bytes <= IOT_CORE_MAX_MESSAGE_BYTES:
            raise ConfigError(
                f"max event bytes must be {MIN_EVENT_BYTES}..{IOT_CORE_MAX_MESSAGE_BYTES} (a larger event "
                f"could never be sent to IoT Core), got {self.max_event_bytes}"
            )
        if self.warm_start_rows < 0:
            raise ConfigError(f"warm start rows must be >= 0 (0 = off), got {self.warm_start_rows}")
        if self.spool_policy not in SPOOL_POLICIES:
            raise ConfigError(f"spool policy must be one of {SPOOL_POLICIES}, got {self.spool_policy!r}")
        for name, value in (
            ("max wait ms", self.max_wait_ms),
            ("latency budget ms", self.latency_budget_ms),
            ("speed", self.speed),
            ("cooldown seconds", self.cooldown_s),
            ("events per hour", self.events_per_hour),
            ("event idle seconds", self.event_idle_s),
            ("health interval seconds", self.health_interval_s),
            ("drain timeout seconds", self.drain_timeout_s),
            ("model poll seconds", self.model_poll_s),
            ("ack timeout seconds", self.ack_timeout_s),
        ):
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite number >= 0, got {value}")
        if 0 < self.ack_timeout_s < MIN_ACK_TIMEOUT_S:
            raise ConfigError(
                f"ack timeout seconds must be 0 (off) or >= {MIN_ACK_TIMEOUT_S:g} (a shorter timeout than "
                f"the cloud's store-and-ack round trip resends every event), got {self.ack_timeout_s}"
            )
        if not 0 < self.mqtt.port < 65536:
            raise ConfigError(f"MQTT port must be 1..65535, got {self.mqtt.port}")


def substitute_thing_name(topic: str, thing_name: str) -> str:
    for placeholder in _THING_PLACEHOLDERS:
        topic = topic.replace(placeholder, thing_name)
    return topic


def _int_like(text: str) -> int:
    """Greengrass interpolates numeric configuration as a float string ("32.0"); accept whole floats."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    return int(value)


def _megabytes(value: float) -> int:
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"spool size must be a positive number of MB, got {value}")
    return int(value * 1024 * 1024)


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m anomaly_detector",
        description="Score sensor streams with an ONNX model and forward anomalies only.",
    )
    p.add_argument("--thing-name", help=f"defaults to ${ENV_THING_NAME}")
    p.add_argument("--model", type=Path, help="model.onnx path (local runs); on a device use --kernel-root")
    p.add_argument("--model-sha256", help="refuse the model unless its sha256 matches")
    p.add_argument("--kernel-root", type=Path, help="Greengrass root; the model comes from configuration")
    p.add_argument("--source", choices=SOURCES, default="file")
    p.add_argument("--file", type=Path, help="CSV to replay (--source file)")
    p.add_argument("--stream", help="stream name for the replayed CSV")
    p.add_argument("--speed", type=float, default=0.0, help="replay speed vs. timestamps; 0 = no pacing")
    p.add_argument("--sensor-topic", default=DEFAULT_SENSOR_TOPIC)
    p.add_argument("--transport", choices=TRANSPORTS, default="mqtt")
    p.add_argument("--anomaly-topic", default=DEFAULT_ANOMALY_TOPIC)
    p.add_argument("--health-topic", default=DEFAULT_HEALTH_TOPIC)
    p.add_argument(
        "--ack-timeout-s",
        type=float,
        default=0.0,
        help="keep a sent event until the cloud acks it, resend it after this long without (0 = off)",
    )
    p.add_argument("--ack-topic", default=DEFAULT_ACK_TOPIC, help="where the cloud publishes acks")
    p.add_argument(
        "--ack-max-resends",
        type=_int_like,
        default=DEFAULT_ACK_MAX_RESENDS,
        help="give an unacked event up after this many resends while the cloud acks others",
    )
    p.add_argument("--mqtt-host", default="127.0.0.1")
    p.add_argument("--mqtt-port", type=_int_like, default=1883)
    p.add_argument("--mqtt-ca", type=Path, help="CA bundle: enables TLS")
    p.add_argument("--mqtt-cert", type=Path)
    p.add_argument("--mqtt-key", type=Path)
    p.add_argument("--mqtt-client-id")
    p.add_argument("--batch-size", type=_int_like, default=256, help="largest micro-batch")
    p.add_argument("--max-wait-ms", type=float, default=50.0, help="longest a window waits for its batch")
    p.add_argument(
        "--latency-budget-ms", type=float, default=1.0, help="batch target = arrival rate x this budget"
    )
    p.add_argument("--cooldown-s", type=float, default=0.0, help="min sample-time gap between events")
    p.add_argument("--event-burst", type=_int_like, default=10, help="events a stream may send at once")
    p.add_argument("--events-per-hour", type=float, default=60.0, help="refill rate of that burst")
    p.add_argument("--max-event-windows", type=_int_like, default=360, help="close long events after this")
    p.add_argument("--event-idle-s", type=float, default=5.0, help="close an event when its stream is quiet")
    p.add_argument(
        "--max-event-bytes",
        type=_int_like,
        default=MAX_EVENT_BYTES,
        help="largest event JSON; a larger peak window is sent as its last rows (values_truncated)",
    )
    p.add_argument("--health-interval-s", type=float, default=60.0)
    p.add_argument("--spool", default=IN_MEMORY, help="sqlite spool file (default: in memory, not durable)")
    p.add_argument("--spool-max-mb", type=float, default=64.0)
    p.add_argument("--spool-policy", choices=SPOOL_POLICIES, default="drop_oldest")
    p.add_argument("--drain-timeout-s", type=float, default=10.0, help="on stop, time to send the spool")
    p.add_argument("--max-message-bytes", type=_int_like, default=1024 * 1024)
    p.add_argument("--max-streams", type=_int_like, default=100_000)
    p.add_argument(
        "--warm-start-rows",
        type=_int_like,
        default=1000,
        help="recent rows per stream replayed through a new model's post-processing at a swap (0 = off)",
    )
    p.add_argument("--model-poll-s", type=float, default=0.0, help="with --model: reload it when it changes")
    p.add_argument("--stats-json", type=Path, help="also write the run summary here")
    p.add_argument("--log-level", default="INFO")
    return p


def config_from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> ComponentConfig:
    env = os.environ if env is None else env
    thing_name = args.thing_name or env.get(ENV_THING_NAME, "")
    if (args.mqtt_cert is None) != (args.mqtt_key is None):
        raise ConfigError("--mqtt-cert and --mqtt-key go together")
    if args.mqtt_cert is not None and args.mqtt_ca is None:
        raise ConfigError("--mqtt-cert needs --mqtt-ca")
    tls = TlsSettings(args.mqtt_ca, args.mqtt_cert, args.mqtt_key) if args.mqtt_ca is not None else None
    mqtt_settings = MqttSettings(host=args.mqtt_host, port=args.mqtt_port, tls=tls)
    if args.mqtt_client_id:
        # IoT Core policies usually pin the client id to the thing name; locally a random id is fine.
        mqtt_settings = dataclasses.replace(mqtt_settings, client_id=args.mqtt_client_id)
    return ComponentConfig(
        thing_name=thing_name,
        source=cast(SourceKind, args.source),
        transport=cast(TransportKind, args.transport),
        model_path=args.model,
        model_sha256=args.model_sha256,
        kernel_root=args.kernel_root,
        file_path=args.file,
        stream=args.stream,
        speed=args.speed,
        sensor_topic=args.sensor_topic,
        anomaly_topic=substitute_thing_name(args.anomaly_topic, thing_name),
        health_topic=substitute_thing_name(args.health_topic, thing_name),
        ack_timeout_s=args.ack_timeout_s,
        ack_topic=substitute_thing_name(args.ack_topic, thing_name),
        ack_max_resends=args.ack_max_resends,
        mqtt=mqtt_settings,
        batch_size=args.batch_size,
        max_wait_ms=args.max_wait_ms,
        latency_budget_ms=args.latency_budget_ms,
        cooldown_s=args.cooldown_s,
        event_burst=args.event_burst,
        events_per_hour=args.events_per_hour,
        max_event_windows=args.max_event_windows,
        event_idle_s=args.event_idle_s,
        max_event_bytes=args.max_event_bytes,
        health_interval_s=args.health_interval_s,
        spool_path=args.spool,
        spool_max_bytes=_megabytes(args.spool_max_mb),
        spool_policy=cast(SpoolPolicy, args.spool_policy),
        drain_timeout_s=args.drain_timeout_s,
        max_message_bytes=args.max_message_bytes,
        max_streams=args.max_streams,
        warm_start_rows=args.warm_start_rows,
        model_poll_s=args.model_poll_s,
        stats_json=args.stats_json,
        log_level=args.log_level,
    )


def parse_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> ComponentConfig:
    """CLI + environment -> validated config. argparse exits(2) on unknown flags; we raise ConfigError."""
    return config_from_args(build_arg_parser().parse_args(argv), env)
