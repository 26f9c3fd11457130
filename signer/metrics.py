"""The signer's Prometheus metrics (``vpool-signer serve --metrics-listen HOST:PORT``): what it
was asked and what it answered, counted as it happens, and its device, node and audit log as
last seen, read at each scrape. Plain HTTP without authentication: bind it to loopback or a
monitoring network (the families tell no amount, address or key).

    vpool_signer_sign_requests_total{kind,decision,reason}   counter
    vpool_signer_device_sign_seconds{kind,result}            histogram
    vpool_signer_serving, vpool_signer_device_usable, vpool_signer_device_state{state},
    vpool_signer_node_reachable, vpool_signer_node_syncing, vpool_signer_chain_tip_height,
    vpool_signer_audit_entries, vpool_signer_rounds_at_device,
    vpool_signer_info{signer,fingerprint,version}                  gauges
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from signer.device_monitor import DeviceCondition, DeviceStatus
from signer.node_monitor import NodeStatus
from vpool.metrics import REGISTRY, Family

SIGN_REQUESTS = REGISTRY.counter(
    "vpool_signer_sign_requests_total",
    "SignRound requests by round kind, decision (signed, refused, failed) and reason code (one "
    "count per reason of a refusal; empty when signed).",
    ("kind", "decision", "reason"),
)
DEVICE_SIGN = REGISTRY.histogram(
    "vpool_signer_device_sign_seconds",
    "Seconds the device took for a round (a person approving included), by kind and result.",
    ("kind", "result"),
)


def count_request(kind: str, decision: str, reasons: Sequence[str]) -> None:
    for reason in reasons or ("",):
        SIGN_REQUESTS.inc(kind=kind, decision=decision, reason=reason)


class SignerCollector:
    """Reads the signer's state at each scrape."""

    def __init__(
        self,
        signer_id: str,
        fingerprint: str,
        version: str,
        node: Callable[[], NodeStatus],
        device: Callable[[], DeviceStatus | None],
        serving_reason: Callable[[], str | None],
        audit_position: Callable[[], tuple[int, str]],
        at_device: Callable[[], int],
    ) -> None:
        self._id, self._fingerprint, self._version = signer_id, fingerprint, version
        self._node, self._device = node, device
        self._serving_reason = serving_reason
        self._audit_position = audit_position
        self._at_device = at_device

    def collect(self) -> list[Family]:
        node, device = self._node(), self._device()
        families = [
            Family("vpool_signer_info", "gauge", "1, labelled with the signer's identity.").add(
                1, signer=self._id, fingerprint=self._fingerprint, version=self._version
            ),
            Family(
                "vpool_signer_serving",
                "gauge",
                "1 while the signer's gRPC health is SERVING (its node and device are usable).",
            ).add(int(self._serving_reason() is None)),
            Family(
                "vpool_signer_node_reachable", "gauge", "1 while the signer's own node answered."
            ).add(int(node.reachable)),
            Family(
                "vpool_signer_node_syncing", "gauge", "1 while the signer's node says it syncs."
            ).add(int(node.syncing)),
            Family(
                "vpool_signer_chain_tip_height", "gauge", "The signer's node's best height."
            ).add(node.tip_height),
            Family("vpool_signer_audit_entries", "gauge", "Entries in the signer's audit log.").add(
                self._audit_position()[0]
            ),
            Family(
                "vpool_signer_rounds_at_device",
                "gauge",
                "Rounds waiting at the device for its user.",
            ).add(self._at_device()),
        ]
        usable = Family(
            "vpool_signer_device_usable", "gauge", "1 while the device can be asked to sign."
        )
        state = Family(
            "vpool_signer_device_state", "gauge", "1 for the device's state as last probed."
        )
        if device is not None:
            usable.add(int(device.usable))
            for condition in DeviceCondition:
                state.add(int(device.condition is condition), state=condition.value)
        return [*families, usable, state]
