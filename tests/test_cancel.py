"""Cancel and replace (pool.cancel, rules X1-X4): the replacement of a signed transaction
without the cancelled requests' payments is a safe replacement once those payments may be
dropped, and nothing else about it changes."""

from __future__ import annotations

import pytest

from pool.cancel import (
    OPERATOR_CANCEL_VERSION,
    CancelManifest,
    build_cancel,
    decode_cancel,
    encode_cancel,
)
from pool.errors import ManifestError
from pool.replacement import Coin, check_replacement
from pool.script import parse_multisig_script
from pool.tx import OutPoint
from pool.weights import multisig_input_weight
from pool.withdrawal import build_round
from tests.factories import BTC, make_series, manifest, request, utxo

S1 = make_series(1, 2, (0, 1, 2))
ORIGINAL = manifest(
    [S1],
    [utxo(i, BTC, 100 + i, index=i) for i in range(2)],
    [request("alice", "1", 30_000_000), request("bob", "1", 10_000_000)],
    fee_rate=1000,
)


def cancel(*cancels: tuple[str, str], fee_rate: int = 3000) -> CancelManifest:
    return CancelManifest(ORIGINAL, fee_rate, cancels)


class Signed:
    def __init__(self, planned_index: int = 0) -> None:
        planned = build_round(ORIGINAL).transactions[planned_index]
        self.tx, self.txid_hex = planned.psbt.tx, planned.txid_hex
        self.change_vout = None if planned.change is None else planned.change.vout


def coins() -> dict[OutPoint, Coin]:
    psbt = build_round(ORIGINAL).transactions[0].psbt
    found = {}
    for txin, inp in zip(psbt.tx.inputs, psbt.inputs, strict=True):
        assert inp.witness_utxo is not None and inp.witness_script is not None
        m, keys = parse_multisig_script(inp.witness_script)
        found[txin.prevout] = Coin(inp.witness_utxo.value, multisig_input_weight(m, len(keys)))
    return found


def test_the_replacement_drops_only_the_cancelled_payment_and_returns_it_to_the_change() -> None:
    (t,) = build_cancel(cancel(("bob", "1"))).transactions
    original = Signed()
    assert t.replaced_txid == original.txid_hex and len(t.dropped) == 1
    assert [i.prevout for i in t.psbt.tx.inputs] == [i.prevout for i in original.tx.inputs]
    assert 10_000_000 not in [o.value for o in t.psbt.tx.outputs]
    assert sum(o.value for o in t.psbt.tx.outputs) + t.fee == sum(c.value for c in coins().values())


def test_the_replacement_is_safe_when_and_only_when_the_cancelled_payment_may_be_dropped() -> None:
    (t,) = build_cancel(cancel(("bob", "1"))).transactions
    original = Signed()
    dropped = {(original.txid_hex, v) for v in t.dropped}
    allowed = check_replacement(
        [original], t.psbt.tx, t.change_vout, coins(), may_drop=lambda *p: p in dropped
    )
    assert (allowed.problem, allowed.added) == (None, frozenset())
    assert check_replacement([original], t.psbt.tx, t.change_vout, coins()).problem is not None


def test_the_fee_is_shared_among_the_clients_it_still_pays() -> None:
    (t,) = build_cancel(cancel(("bob", "1"))).transactions
    assert t.fee_shares == (("alice", t.fee),)


def test_a_cancel_manifest_round_trips_and_names_its_original() -> None:
    c = cancel(("bob", "1"), ("alice", "1"))
    assert decode_cancel(encode_cancel(c)) == c


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"fee_rate": 1500}, "fee_rate"),
        ({"cancels": ()}, "cancels"),
        ({"cancels": (("bob", "1"), ("bob", "1"))}, "cancels"),
    ],
)
def test_a_bad_cancel_manifest_is_refused_naming_the_field(changes: dict, field: str) -> None:  # type: ignore[type-arg]
    args = {"original": ORIGINAL, "fee_rate": 3000, "cancels": (("bob", "1"),), **changes}
    with pytest.raises(ManifestError, match=field):
        CancelManifest(**args)  # type: ignore[arg-type]


def test_cancelling_a_request_the_round_does_not_pay_is_refused() -> None:
    with pytest.raises(ManifestError, match="not paid by the round"):
        build_cancel(cancel(("carol", "1")))


def test_an_operator_cancel_round_trips_as_version_2_and_builds_the_same_replacements() -> None:
    client = cancel(("bob", "1"))
    operator = CancelManifest(ORIGINAL, 3000, (("bob", "1"),), version=OPERATOR_CANCEL_VERSION)
    assert decode_cancel(encode_cancel(operator)) == operator and operator.requeue
    assert not client.requeue
    assert encode_cancel(operator) != encode_cancel(client)  # the signers tell them apart
    assert [t.psbt for t in build_cancel(operator).transactions] == [
        t.psbt for t in build_cancel(client).transactions
    ]


def test_a_cancel_of_an_unknown_version_is_refused() -> None:
    with pytest.raises(ManifestError, match="version"):
        CancelManifest(ORIGINAL, 3000, (("bob", "1"),), version=3)
