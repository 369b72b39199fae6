"""The component against a real mosquitto: mutual TLS, and a broker that is down when the component starts."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import queue
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.enums import CallbackAPIVersion

import greengrass_components
from standins.processes import ManagedProcess, free_port, mosquitto_binary

from .helpers import wait_until
from .test_store_and_forward import CloudListener, write_csv

ARTIFACT_PARENT = Path(greengrass_components.__file__).parent


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path


def _issue(
    subject: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(directory: Path) -> Pki:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, all PEM files."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _issue("edgeml test CA", ca_key, _name("edgeml test CA"), ca_key, ca=True)
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    server_cert = _issue("127.0.0.1", ca_key, ca_cert.subject, server_key, server=True)
    client_cert = _issue("gw-tls", ca_key, ca_cert.subject, client_key)
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    (directory / "server.pem").write_bytes(server_cert.public_bytes(pem))
    (directory / "client.pem").write_bytes(client_cert.public_bytes(pem))
    return Pki(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=_write_key(server_key, directory / "server.key"),
        client_cert=directory / "client.pem",
        client_key=_write_key(client_key, directory / "client.key"),
    )


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[int, Pki]]:
    pki_dir = tmp_path / "pki"
    pki_dir.mkdir()
    pki = make_pki(pki_dir)
    # mosquitto drops to its own user when started as root; it must still read the key files.
    for path in (pki_dir, *pki_dir.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    tmp_path.chmod(0o755)
    port = free_port()
    conf = tmp_path / "mosquitto-tls.conf"
    user = "user root\n" if os.geteuid() == 0 else ""
    conf.write_text(
        f"listener {port} 127.0.0.1\n{user}allow_anonymous true\npersistence false\n"
        f"cafile {pki.ca}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"
        "require_certificate true\ntls_version tlsv1.2\n"
    )
    proc = ManagedProcess(name="mosquitto-tls", argv=[mosquitto_binary(), "-c", str(conf)], port=port)
    proc.start()
    try:
        yield port, pki
    finally:
        proc.stop()


def tls_subscriber(port: int, pki: Pki, topic: str) -> tuple[mqtt.Client, queue.Queue[bytes]]:
    received: queue.Queue[bytes] = queue.Queue()
    subscribed = queue.Queue[int]()
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.tls_set(ca_certs=str(pki.ca), certfile=str(pki.client_cert), keyfile=str(pki.client_key))
    client.on_connect = lambda c, *_a: c.subscribe(topic, qos=1)
    client.on_subscribe = lambda *_a: subscribed.put(1)
    client.on_message = lambda _c, _u, m: received.put(bytes(m.payload))
    client.connect("127.0.0.1", port)
    client.loop_start()
    subscribed.get(timeout=5)
    return client, received


def component(model: Path, csv: Path, port: int, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "AWS_IOT_THING_NAME"}}
    with log.open("ab") as err:
        return subprocess.Popen(
            [
                sys.executable, "-m", "anomaly_detector", "--thing-name", "gw-tls", "--model", str(model),
                "--source", "file", "--file", str(csv), "--stream", "pump", "--transport", "mqtt",
                "--mqtt-port", str(port), "--health-interval-s", "0", "--drain-timeout-s", "30", *extra,
            ],
            cwd=ARTIFACT_PARENT, env=env, stdout=subprocess.PIPE, stderr=err,
        )  # fmt: skip


def test_component_publishes_over_mutual_tls(
    tmp_path: Path, model_path: Path, tls_broker: tuple[int, Pki]
) -> None:
    port, pki = tls_broker
    csv, log = tmp_path / "data.csv", tmp_path / "component.log"
    write_csv(csv, spikes=(40,), n=60)
    subscriber, received = tls_subscriber(port, pki, "edge/gw-tls/anomalies")
    try:
        proc = component(
            model_path, csv, port, log,
            "--mqtt-ca", str(pki.ca), "--mqtt-cert", str(pki.client_cert), "--mqtt-key", str(pki.client_key),
        )  # fmt: skip
        stdout, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, log.read_text()[-2000:]
        event = json.loads(received.get(timeout=10))
    finally:
        subscriber.disconnect()
        subscriber.loop_stop()
    assert event["thing_name"] == "gw-tls"
    assert event["stream"] == "pump"
    assert event["timestamp"] == "2013-12-03T00:35:00Z"  # row 40: 21:15 + 40 x 5 min
    assert json.loads(stdout)["anomalies_forwarded"] == 1


def test_component_without_a_client_certificate_is_refused_by_the_tls_broker(
    tmp_path: Path, model_path: Path, tls_broker: tuple[int, Pki]
) -> None:
    port, pki = tls_broker
    csv, log = tmp_path / "data.csv", tmp_path / "component.log"
    write_csv(csv, spikes=(40,), n=60)
    # CA only: the server is verified but we present no certificate, which require_certificate refuses.
    proc = component(model_path, csv, port, log, "--mqtt-ca", str(pki.ca), "--drain-timeout-s", "1")
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, log.read_text()[-2000:]
    summary = json.loads(stdout)
    assert summary["anomalies_spooled"] == 1
    assert summary["anomalies_forwarded"] == 0
    assert "MQTT broker not reachable yet" in log.read_text()


def test_broker_down_at_start_then_up_delivers_the_spooled_event(tmp_path: Path, model_path: Path) -> None:
    port = free_port()  # no broker yet
    csv, log, spool = tmp_path / "data.csv", tmp_path / "component.log", tmp_path / "spool.db"
    write_csv(csv, spikes=(40,), n=60)
    proc = component(model_path, csv, port, log, "--spool", str(spool))
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    broker = ManagedProcess(name="mosquitto-late", argv=[mosquitto_binary(), "-c", str(conf)], port=port)
    listener: CloudListener | None = None
    try:
        # Spool-only mode: it started, scored, and spooled the event with no broker at all.
        assert wait_until(lambda: '"anomaly event"' in log.read_text(), 20), log.read_text()[-2000:]
        assert "MQTT broker not reachable yet" in log.read_text()
        assert proc.poll() is None  # still trying to deliver (drain timeout 30 s)
        broker.start()
        listener = CloudListener(port)
        stdout, _ = proc.communicate(timeout=40)
        assert proc.returncode == 0, log.read_text()[-2000:]
        assert wait_until(lambda: len(listener.messages) == 1, 10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if listener is not None:
            listener.close()
        broker.stop()
    summary = json.loads(stdout)
    assert summary["anomalies_forwarded"] == 1
    assert listener.messages[0]["stream"] == "pump"
