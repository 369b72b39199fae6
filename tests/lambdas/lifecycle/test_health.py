"""Canary device health as pure functions: execution status, component states, anomaly rate."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lambdas.lifecycle.errors import ConfigError
from lambdas.lifecycle.health import (
    CanaryHealth,
    DeviceReport,
    EffectiveDeployment,
    ExpectedRollout,
    HealthPolicy,
    HealthState,
    HeartbeatSample,
    InstalledComponent,
    assess_device,
    model_counts,
)

TARGET = "arn:aws:iot:us-east-1:123456789012:thinggroup/canary"
EXPECTED = ExpectedRollout(
    target_arn=TARGET,
    deployment_id="d-2",
    model_component="com.edgeml.AnomalyModel",
    model_component_version="1.0.1",
    inference_component="com.edgeml.AnomalyDetector",
    model_version="new",
    baseline_model_version="old",
)
POLICY = HealthPolicy(max_rate_ratio=2.0, rate_slack=0.001, min_windows=100, max_rate_without_baseline=0.05)


def report(status: str = "SUCCEEDED", *, model: str = "1.0.1", inference: str = "RUNNING") -> DeviceReport:
    return DeviceReport(
        thing_name="gw-1",
        registered=True,
        effective=(EffectiveDeployment("d-2", TARGET, status, "boom" if status == "FAILED" else ""),),
        installed=(
            InstalledComponent("com.edgeml.AnomalyModel", model, "FINISHED"),
            InstalledComponent("com.edgeml.AnomalyDetector", "1.2.0", inference),
        ),
    )


def beat(t: int, model: str, windows: float, anomalies: float) -> HeartbeatSample:
    return HeartbeatSample(f"2026-11-24T20:{t:02d}:00.000000Z", model, windows, anomalies)


def test_counts_attribute_intervals_to_the_reporting_model_across_a_swap_and_a_restart():
    beats = [
        beat(0, "old", 1000, 10),  # start point: its totals include unknown history
        beat(1, "old", 2000, 12),  # old: +1000 windows, +2 anomalies
        beat(2, "new", 3000, 15),  # hot swap, same process: new +1000, +3
        beat(3, "new", 500, 1),  # restart: the counters start again; new +500, +1
    ]
    assert model_counts(beats, "old") == (2.0, 1000.0)
    assert model_counts(beats, "new") == (4.0, 1500.0)
    assert model_counts(list(reversed(beats)), "new") == (4.0, 1500.0)  # order of input does not matter


def test_healthy_device():
    health = assess_device(report(), EXPECTED, heartbeats=None, policy=POLICY)
    assert (health.state, health.reasons) == (HealthState.HEALTHY, ())


@pytest.mark.parametrize(
    ("device", "state", "reason"),
    [
        (report("FAILED"), HealthState.FAILED, "deployment d-2 is FAILED: boom"),
        (report("TIMED_OUT"), HealthState.FAILED, "deployment d-2 is TIMED_OUT"),
        (report("IN_PROGRESS"), HealthState.PENDING, "deployment d-2 is IN_PROGRESS"),
        (report(inference="BROKEN"), HealthState.FAILED, "com.edgeml.AnomalyDetector 1.2.0 is BROKEN"),
        (
            report(inference="STARTING"),
            HealthState.PENDING,
            "com.edgeml.AnomalyDetector is STARTING, not RUNNING",
        ),
        (report(model="1.0.0"), HealthState.PENDING, "com.edgeml.AnomalyModel is at 1.0.0, expected 1.0.1"),
        (DeviceReport("gw-1", registered=False), HealthState.PENDING, "is not a registered Greengrass core"),
        (DeviceReport("gw-1", registered=True), HealthState.PENDING, f"has no deployment from {TARGET} yet"),
    ],
)
def test_unhealthy_devices(device: DeviceReport, state: HealthState, reason: str):
    health = assess_device(device, EXPECTED, heartbeats=None, policy=POLICY)
    assert health.state is state
    assert any(r.startswith(reason) for r in health.reasons), health.reasons


def test_another_deployment_is_pending_not_failed():
    device = DeviceReport("gw-1", True, (EffectiveDeployment("d-1", TARGET, "SUCCEEDED"),))
    health = assess_device(device, EXPECTED, heartbeats=None, policy=POLICY)
    assert health.state is HealthState.PENDING
    assert health.reasons[0] == "runs deployment d-1 (SUCCEEDED), not the canary deployment d-2"


def test_anomaly_rate_against_the_same_device_s_baseline():
    baseline = [beat(0, "old", 0, 0), beat(1, "old", 1000, 10)]  # 1 %
    ok = [*baseline, beat(2, "new", 2000, 30)]  # 2 % <= 2 x 1 % + 0.1 %
    bad = [*baseline, beat(2, "new", 2000, 32)]  # 2.2 %
    good = assess_device(report(), EXPECTED, heartbeats=ok, policy=POLICY)
    assert (good.state, good.anomaly_rate, good.baseline_rate) == (HealthState.HEALTHY, 0.02, 0.01)
    failed = assess_device(report(), EXPECTED, heartbeats=bad, policy=POLICY)
    assert failed.state is HealthState.FAILED
    assert failed.reasons == ("anomaly rate 0.022 exceeds 0.021 (2 * the previous model's 0.01 + 0.001)",)


def test_anomaly_rate_needs_enough_windows_and_falls_back_to_a_cap():
    few = [beat(0, "old", 0, 0), beat(1, "new", 50, 0)]
    pending = assess_device(report(), EXPECTED, heartbeats=few, policy=POLICY)
    assert pending.state is HealthState.PENDING
    assert pending.reasons == (
        "has scored 50 windows with model new; 100 are needed to judge its anomaly rate",
    )
    no_baseline = [beat(0, "new", 0, 0), beat(1, "new", 1000, 60)]  # 6 % > the 5 % cap
    capped = assess_device(report(), EXPECTED, heartbeats=no_baseline, policy=POLICY)
    assert capped.state is HealthState.FAILED
    assert "the cap used without a baseline" in capped.reasons[0]


def test_canary_state_combines_devices():
    healthy = assess_device(report(), EXPECTED, heartbeats=None, policy=POLICY)
    failed = assess_device(report("FAILED"), EXPECTED, heartbeats=None, policy=POLICY)
    pending = assess_device(report("QUEUED"), EXPECTED, heartbeats=None, policy=POLICY)
    assert CanaryHealth(TARGET, "d-2", "new", (healthy, healthy)).state is HealthState.HEALTHY
    assert CanaryHealth(TARGET, "d-2", "new", (healthy, pending)).state is HealthState.PENDING
    assert CanaryHealth(TARGET, "d-2", "new", (pending, failed)).state is HealthState.FAILED
    empty = CanaryHealth(TARGET, "d-2", "new", ())
    assert (empty.state, empty.reasons) == (
        HealthState.PENDING,
        (f"the canary group {TARGET} has no devices",),
    )


def test_a_failure_counts_as_the_deployment_s_own_once_the_device_has_finished_it():
    """While a device installs (QUEUED, IN_PROGRESS), a broken component is the deployment's before."""
    installing = assess_device(
        report("IN_PROGRESS", inference="BROKEN"), EXPECTED, heartbeats=None, policy=POLICY
    )
    other = DeviceReport(
        "gw-1",
        True,
        (EffectiveDeployment("d-1", TARGET, "SUCCEEDED"),),
        (InstalledComponent("com.edgeml.AnomalyDetector", "1.2.0", "BROKEN"),),
    )
    left_over = assess_device(other, EXPECTED, heartbeats=None, policy=POLICY)
    broken = assess_device(report(inference="BROKEN"), EXPECTED, heartbeats=None, policy=POLICY)
    failed = assess_device(report("FAILED"), EXPECTED, heartbeats=None, policy=POLICY)

    assert [h.state for h in (installing, left_over, broken, failed)] == [HealthState.FAILED] * 4
    assert [h.deployed for h in (installing, left_over, broken, failed)] == [False, False, True, True]
    assert not CanaryHealth(TARGET, "d-2", "new", (installing, left_over)).failed_when_deployed
    assert CanaryHealth(TARGET, "d-2", "new", (installing, broken)).failed_when_deployed
    assert CanaryHealth(TARGET, "d-2", "new", (failed,)).failed_when_deployed
    assert broken.to_dict()["deployed"] is True


def test_health_policy_parsing():
    assert HealthPolicy.parse('{"min_windows": 500, "max_rate_ratio": 1.5}') == HealthPolicy(
        max_rate_ratio=1.5, min_windows=500
    )
    with pytest.raises(ConfigError, match="keys from"):
        HealthPolicy.parse('{"ratio": 2}')
    with pytest.raises(ConfigError, match="min_windows must be >= 0"):
        HealthPolicy.parse('{"min_windows": -1}')


def test_only_the_model_and_inference_components_are_judged():
    vendor = InstalledComponent("vendor.SensorDriver", "1.0.0", "BROKEN", "exited 3 times")
    unrelated = replace(report(), installed=(*report().installed, vendor))
    health = assess_device(unrelated, EXPECTED, heartbeats=None, policy=POLICY)
    assert (health.state, health.reasons) == (HealthState.HEALTHY, ())

    broken_model = replace(
        report(), installed=(InstalledComponent("com.edgeml.AnomalyModel", "1.0.1", "BROKEN"), vendor)
    )
    health = assess_device(broken_model, EXPECTED, heartbeats=None, policy=POLICY)
    assert health.state is HealthState.FAILED
    assert health.reasons == (
        "com.edgeml.AnomalyModel 1.0.1 is BROKEN",
        "com.edgeml.AnomalyDetector is not installed",
    )


def test_heartbeats_without_the_anomaly_counter_leave_the_rate_unjudged_not_zero():
    # A component that does not send anomalous_windows: read as 0 anomalies, any model would pass.
    silent = [
        HeartbeatSample("2026-11-24T20:00:00.000000Z", "new", 0, None),
        HeartbeatSample("2026-11-24T20:01:00.000000Z", "new", 5000, None),
    ]
    health = assess_device(report(), EXPECTED, heartbeats=silent, policy=POLICY)
    assert health.state is HealthState.PENDING
    assert health.anomaly_rate is None
    assert health.reasons == (
        "heartbeats under model new carry no 'anomalous_windows' counter (an inference component too old "
        "to send it); its anomaly rate cannot be judged",
    )


def test_a_baseline_without_the_anomaly_counter_falls_back_to_the_cap():
    beats = [
        HeartbeatSample("2026-11-24T20:00:00.000000Z", "old", 0, None),
        HeartbeatSample("2026-11-24T20:01:00.000000Z", "old", 1000, None),
        beat(2, "new", 2000, 30),  # the first with the counter: a start point
        beat(3, "new", 3000, 60),  # 3 % under the 5 % cap
    ]
    health = assess_device(report(), EXPECTED, heartbeats=beats, policy=POLICY)
    assert (health.state, health.anomaly_rate, health.baseline_rate) == (HealthState.HEALTHY, 0.03, None)


def test_an_interval_where_the_counter_appears_counts_nothing_instead_of_the_whole_total():
    # An old component's heartbeat, then the new one's (no restart seen: more windows than before). Taking
    # the missing counter as 0 would charge the new process's anomalies since start to one interval.
    beats = [
        HeartbeatSample("2026-11-24T20:00:00.000000Z", "new", 5000, None),
        beat(1, "new", 6000, 120),
        beat(2, "new", 7000, 140),  # 2 % over this interval
    ]
    assert model_counts(beats, "new") == (20.0, 1000.0)


def test_heartbeats_without_the_counter_before_an_update_do_not_block_judging_after_it():
    # The component was updated: older heartbeats under the model lack the counter, newer ones carry it.
    beats = [
        HeartbeatSample("2026-11-24T20:00:00.000000Z", "new", 1000, None),
        HeartbeatSample("2026-11-24T20:01:00.000000Z", "new", 2000, None),
        beat(2, "new", 3000, 10),
        beat(3, "new", 4000, 20),  # 1 % over the interval counted since the update
    ]
    health = assess_device(report(), EXPECTED, heartbeats=beats, policy=POLICY)
    assert (health.state, health.anomaly_rate, health.rate_unjudged) == (HealthState.HEALTHY, 0.01, False)
