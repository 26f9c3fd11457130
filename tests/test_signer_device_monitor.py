"""What a signer says about its device: the limits per device type, the monitor's status, and
the health that follows from the node and the device together."""

from __future__ import annotations

from grpc_health.v1 import health_pb2

from signer.backends.hwi import condition_of_failure
from signer.device_monitor import (
    DeviceCondition,
    DeviceLimits,
    DeviceMonitor,
    TxShape,
    limits_of,
    shape_problems,
)
from signer.node_monitor import NodeStatus
from signer.server import SERVICE_NAME, Health
from vpool.health import ReasonedHealthServicer

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
NODE_FINE = NodeStatus(True, True, 100, "00" * 32)


def test_a_jade_reports_its_401_kib_psbt_buffer() -> None:
    assert limits_of("jade", 0) == DeviceLimits(max_psbt_bytes=401 * 1024)


def test_a_ledger_reports_512_inputs_and_outputs() -> None:
    limits = limits_of("ledger_nano_s_plus", 0)
    assert (limits.max_inputs, limits.max_outputs) == (512, 512)


def test_the_operators_cap_on_reviewed_payments_is_reported_for_any_device() -> None:
    assert limits_of("software", 25) == DeviceLimits(max_reviewed_payments=25)


def test_a_transaction_within_every_limit_has_no_problem() -> None:
    limits = DeviceLimits(
        max_inputs=512, max_outputs=512, max_psbt_bytes=1000, max_reviewed_payments=3
    )
    assert shape_problems(limits, [TxShape(1000, 512, 4, 3)]) == []


def test_each_limit_a_transaction_passes_is_named() -> None:
    limits = DeviceLimits(
        max_inputs=512, max_outputs=512, max_psbt_bytes=1000, max_reviewed_payments=3
    )
    problems = shape_problems(limits, [TxShape(10, 1, 2, 1), TxShape(1001, 513, 513, 512)])
    assert problems == [
        "PSBT 1 has 1001 bytes, the device takes at most 1000",
        "PSBT 1 has 513 inputs, the device signs at most 512",
        "PSBT 1 has 513 outputs, the device signs at most 512",
        "PSBT 1 has 512 payments, its reviewer takes at most 3",
    ]


def test_limits_of_zero_are_no_limits() -> None:
    assert shape_problems(DeviceLimits(), [TxShape(10**9, 10**6, 10**6, 10**6)]) == []


def test_the_monitor_keeps_what_the_last_probe_found() -> None:
    answers = iter([(DeviceCondition.READY, ""), (DeviceCondition.LOCKED, "enter the PIN")])
    monitor = DeviceMonitor(lambda timeout: next(answers), lambda: 5.0, 1.0)
    monitor.probe()
    status = monitor.probe()
    assert (status.condition, status.usable, status.error, status.checked_at) == (
        DeviceCondition.LOCKED,
        False,
        "enter the PIN",
        5.0,
    )


def test_a_busy_device_reports_since_when_a_round_is_at_it() -> None:
    monitor = DeviceMonitor(
        lambda timeout: (DeviceCondition.BUSY, ""), lambda: 9.0, 1.0, lambda: 7.0
    )
    status = monitor.probe()
    assert (status.usable, status.busy_since) == (True, 7.0)


class Context:
    """What Check is handed: it keeps the trailing metadata (the reason)."""

    metadata: tuple[tuple[str, str], ...] = ()

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata = metadata


def served(node: NodeStatus, condition: DeviceCondition) -> int:
    service = ReasonedHealthServicer()
    health = Health()
    health.attach(service)
    health.node(node)
    health.device(DeviceMonitor(lambda timeout: (condition, "why"), lambda: 0.0, 1.0).probe())
    request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
    status: int = service.Check(request, Context()).status
    return status


def test_an_absent_device_makes_the_signer_not_serving() -> None:
    assert served(NODE_FINE, DeviceCondition.ABSENT) == NOT_SERVING


def test_a_locked_device_makes_the_signer_not_serving() -> None:
    assert served(NODE_FINE, DeviceCondition.LOCKED) == NOT_SERVING


def test_another_device_makes_the_signer_not_serving() -> None:
    assert served(NODE_FINE, DeviceCondition.WRONG_DEVICE) == NOT_SERVING


def test_a_device_busy_with_a_person_keeps_the_signer_serving() -> None:
    assert served(NODE_FINE, DeviceCondition.BUSY) == SERVING


def test_an_unreachable_node_makes_the_signer_not_serving_whatever_the_device() -> None:
    assert served(NodeStatus(True, False, error="down"), DeviceCondition.READY) == NOT_SERVING


def test_a_device_that_is_not_ready_is_reported_locked() -> None:
    assert condition_of_failure("opening the device: Device not ready") is DeviceCondition.LOCKED


def test_a_device_with_another_fingerprint_is_reported_as_the_wrong_device() -> None:
    message = "found a device with fingerprint 0badf00d, not 73c5da0a"
    assert condition_of_failure(message) is DeviceCondition.WRONG_DEVICE


def test_a_device_nobody_finds_is_reported_absent() -> None:
    message = "opening the device: no device with fingerprint 73c5da0a among 0 found"
    assert condition_of_failure(message) is DeviceCondition.ABSENT
