"""Health that tells the truth, and why: the reasons a signer or the coordinator gives for
NOT_SERVING (vpool.health sends them along each health Check), each cause on its own."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from signer.device_monitor import DeviceCondition, DeviceStatus
from signer.node_monitor import NOT_CONFIGURED, NodeStatus
from signer.server import not_serving_reason
from vpool.health import MAX_REASON, REASON_KEY, ReasonedHealthServicer, printable

REACHABLE = NodeStatus(True, True, 120, "ab" * 32)
READY = DeviceStatus(DeviceCondition.READY)


def test_a_signer_with_its_node_and_device_fine_gives_no_reason() -> None:
    assert not_serving_reason(REACHABLE, READY) is None


def test_a_signer_whose_node_is_unreachable_says_so_with_the_error() -> None:
    node = NodeStatus(True, False, error="connection refused")
    assert not_serving_reason(node, READY) == "the node is unreachable: connection refused"


def test_a_signer_whose_node_syncs_says_it_syncs() -> None:
    node = NodeStatus(True, True, 100, "cd" * 32, syncing=True)
    assert not_serving_reason(node, READY) == "the node is syncing"


def test_a_signer_whose_device_is_locked_says_so() -> None:
    device = DeviceStatus(DeviceCondition.LOCKED, "PIN needed")
    assert not_serving_reason(REACHABLE, device) == "the device is locked: PIN needed"


def test_a_signer_with_both_problems_gives_both() -> None:
    node = NodeStatus(True, False, error="timed out")
    device = DeviceStatus(DeviceCondition.ABSENT, "no device")
    assert not_serving_reason(node, device) == (
        "the node is unreachable: timed out; the device is absent: no device"
    )


def test_a_signer_without_a_node_in_development_serves() -> None:
    assert not_serving_reason(NodeStatus(False, error=NOT_CONFIGURED), READY) is None


def test_a_reason_becomes_one_printable_line_of_bounded_length() -> None:
    assert printable("a\nb\tc – d") == "a b c ? d"
    assert len(printable("x" * 5000)) == MAX_REASON


@pytest.fixture
def health() -> Iterator[tuple[ReasonedHealthServicer, health_pb2_grpc.HealthStub]]:
    """A real gRPC server on a free loopback port serving only the health service."""
    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = ReasonedHealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield servicer, health_pb2_grpc.HealthStub(channel)
    finally:
        channel.close()
        server.stop(None).wait()


def _check(stub: health_pb2_grpc.HealthStub, service: str) -> tuple[int, str | None]:
    answer, call = stub.Check.with_call(health_pb2.HealthCheckRequest(service=service), timeout=10)
    return int(answer.status), dict(call.trailing_metadata()).get(REASON_KEY)


def test_not_serving_sends_its_reason_in_the_trailing_metadata(
    health: tuple[ReasonedHealthServicer, health_pb2_grpc.HealthStub],
) -> None:
    servicer, stub = health
    servicer.set_reason(("", "svc"), "the pool is degraded: 1 of 3 healthy")
    Status = health_pb2.HealthCheckResponse
    assert _check(stub, "svc") == (Status.NOT_SERVING, "the pool is degraded: 1 of 3 healthy")
    assert _check(stub, "") == (Status.NOT_SERVING, "the pool is degraded: 1 of 3 healthy")


def test_serving_again_sends_no_reason(
    health: tuple[ReasonedHealthServicer, health_pb2_grpc.HealthStub],
) -> None:
    servicer, stub = health
    servicer.set_reason(("",), "the node does not answer")
    servicer.set_reason(("",), None)
    assert _check(stub, "") == (health_pb2.HealthCheckResponse.SERVING, None)
