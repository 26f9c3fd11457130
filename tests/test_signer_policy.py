"""The signer policy against a hostile coordinator: every mutation of an honest round is refused
with its own reason code, before any device is asked.

The signing history here is an in-memory stand-in for ``signer.state.SignerState``, whose own
tests and the daemon's integration tests cover the persisted path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest

from pool.address import script_pubkey_to_address
from pool.manifest import Manifest, WithdrawalRequest, encode_manifest
from pool.networks import REGTEST, TESTNET
from pool.psbt import Psbt, PsbtOutput
from pool.series import Series, SeriesState
from pool.tx import OutPoint, TxIn, TxOut
from pool.vocabulary import Reason, Scope
from pool.withdrawal import build_round
from signer.policy import (
    Approval,
    PolicyConfig,
    Refusal,
    evaluate_round,
    registration_refusal,
    series_checksum,
    signed_vsize,
)
from tests.factories import (
    BTC,
    make_series,
    manifest,
    master_key,
    p2wpkh,
    request,
    sign_first_m,
    utxo,
)
from tests.signer_harness import MemoryHistory, reasons

S1 = make_series(1, 2, (0, 1, 2))
FOREIGN = make_series(1, 2, (7, 8, 9))
OURS = master_key(0).fingerprint
NOW = 1_800_000_000.0


APPROVED = frozenset({series_checksum(S1, REGTEST)})


def policy(**settings: object) -> PolicyConfig:
    """This signer's policy: S1 approved, the defaults but for ``settings``."""
    return PolicyConfig(**{"approved_series": APPROVED, **settings})  # type: ignore[arg-type]


def honest_manifest(**changes: object) -> Manifest:
    base = manifest(
        [S1],
        [utxo(i, BTC, 100 + i, index=i) for i in range(4)],
        [
            request("alice", "1", 30_000_000),
            request("bob", "1", 20_000_000),
            request("bob", "2", 5_000_000),
        ],
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def psbts_of(m: Manifest) -> list[bytes]:
    return [p.serialize() for p in build_round(m).psbts]


def evaluate(
    m: Manifest | bytes,
    psbts: Sequence[bytes] | None = None,
    *,
    config: PolicyConfig | None = None,
    history: MemoryHistory | None = None,
    registered: dict[int, Series] | None = None,
    network: object = REGTEST,
) -> Approval | list[Refusal]:
    manifest_bytes = m if isinstance(m, bytes) else encode_manifest(m)
    if psbts is None:
        assert not isinstance(m, bytes)
        psbts = psbts_of(m)
    return evaluate_round(
        config or policy(),
        OURS,
        network,  # type: ignore[arg-type]
        registered if registered is not None else {1: S1},
        manifest_bytes,
        psbts,
        history or MemoryHistory(),
        NOW,
    )


def mutate(change: Callable[[Psbt], Psbt], m: Manifest | None = None) -> list[bytes]:
    """The honest round's PSBTs with the first one changed."""
    m = m or honest_manifest()
    psbts = [t.psbt for t in build_round(m).transactions]
    return [change(psbts[0]).serialize()] + [p.serialize() for p in psbts[1:]]


def with_outputs(
    psbt: Psbt, outputs: list[TxOut], maps: Sequence[PsbtOutput] | None = None
) -> Psbt:
    maps = psbt.outputs if maps is None else maps
    return replace(psbt, tx=replace(psbt.tx, outputs=tuple(outputs)), outputs=tuple(maps))


def change_vout(m: Manifest) -> int:
    change = build_round(m).transactions[0].change
    assert change is not None
    return change.vout


# --------------------------------------------------------------------------- the honest round


def test_honest_round_is_approved() -> None:
    result = evaluate(honest_manifest())
    assert isinstance(result, Approval)
    assert result.payments == 55_000_000
    assert result.fee_bumps == ()


def test_signing_the_same_round_again_is_approved_and_not_counted_twice() -> None:
    history = MemoryHistory()
    first = evaluate(honest_manifest(), history=history)
    assert isinstance(first, Approval)
    history.record(first, NOW)
    again = evaluate(honest_manifest(), history=history)
    assert isinstance(again, Approval)
    assert again.payments == 0


def test_fee_bump_of_a_signed_round_is_approved() -> None:
    history = MemoryHistory()
    first = evaluate(honest_manifest(), history=history)
    assert isinstance(first, Approval)
    history.record(first, NOW)
    bump = evaluate(honest_manifest(fee_rate=10_000), history=history)
    assert isinstance(bump, Approval)
    assert bump.fee_bumps == (bump.psbts[0].tx.txid_hex,)


def test_fee_bump_adds_nothing_to_the_limits() -> None:
    history = MemoryHistory()
    first = evaluate(honest_manifest(), history=history)
    assert isinstance(first, Approval)
    history.record(first, NOW)
    bump = evaluate(
        honest_manifest(fee_rate=10_000),
        history=history,
        config=policy(max_daily_amount=first.payments),
    )
    assert isinstance(bump, Approval)
    assert bump.payments == 0


# --------------------------------------------------------------------------- safe replacement


def signed(m: Manifest) -> MemoryHistory:
    """A history in which the round of ``m`` was signed."""
    history = MemoryHistory()
    first = evaluate(m, history=history)
    assert isinstance(first, Approval)
    history.record(first, NOW)
    return history


def two_coin_round(
    *requests: WithdrawalRequest, coins: Sequence[int] = (0, 1), fee_rate: int | None = None
) -> Manifest:
    base = manifest([S1], [utxo(i, BTC, 100 + i, index=i) for i in coins], list(requests))
    return base if fee_rate is None else replace(base, fee_rate=fee_rate)


BUMPED = 5_000
"""A fee rate above the honest round's: a replacement must pay a higher one."""


def test_a_replacement_that_still_pays_every_payment_and_adds_one_is_approved() -> None:
    history = signed(honest_manifest())
    more = honest_manifest(
        requests=(*honest_manifest().requests, request("carol", "1", 10**7)), fee_rate=BUMPED
    )
    result = evaluate(more, history=history)
    assert isinstance(result, Approval)
    assert result.fee_bumps == (result.psbts[0].tx.txid_hex,)


def test_a_replacement_counts_only_the_payments_it_adds_toward_the_limits() -> None:
    history = signed(honest_manifest())
    more = honest_manifest(
        requests=(*honest_manifest().requests, request("carol", "1", 10**7)), fee_rate=BUMPED
    )
    result = evaluate(more, history=history)
    assert isinstance(result, Approval)
    assert (result.payments, result.destinations) == (10**7, ((p2wpkh("carol/1"), 10**7),))


def test_a_replacement_whose_new_payments_pass_the_daily_limit_is_refused() -> None:
    history = signed(honest_manifest())
    more = honest_manifest(
        requests=(*honest_manifest().requests, request("carol", "1", 10**7)), fee_rate=BUMPED
    )
    config = policy(max_daily_amount=55_000_000 + 10**7 - 1)
    assert reasons(evaluate(more, history=history, config=config)) == [Reason.DAILY_LIMIT_EXCEEDED]


def test_a_replacement_that_drops_a_payment_is_refused_as_a_double_sign() -> None:
    history = signed(honest_manifest())
    fewer = honest_manifest(requests=honest_manifest().requests[:2], fee_rate=BUMPED)
    assert reasons(evaluate(fewer, history=history)) == [Reason.DOUBLE_SIGN]


def test_a_replacement_that_redirects_a_payment_is_refused_as_a_double_sign() -> None:
    history = signed(honest_manifest())
    alice, bob1, bob2 = honest_manifest().requests
    redirected = replace(bob2, script_pubkey=p2wpkh("mallory"))
    hostile = honest_manifest(requests=(alice, bob1, redirected), fee_rate=BUMPED)
    assert reasons(evaluate(hostile, history=history)) == [Reason.DOUBLE_SIGN]


def test_a_replacement_at_a_lower_fee_rate_is_refused_as_a_double_sign() -> None:
    history = signed(honest_manifest(fee_rate=BUMPED))
    result = evaluate(honest_manifest(), history=history)
    assert reasons(result) == [Reason.DOUBLE_SIGN]
    assert isinstance(result, list) and "is not above" in result[0].message


def test_a_fee_bump_above_the_signers_fee_rate_limit_is_refused() -> None:
    history = signed(honest_manifest())
    bump = evaluate(
        honest_manifest(fee_rate=BUMPED), history=history, config=policy(max_fee_rate=4_000)
    )
    assert reasons(bump) == [Reason.FEE_RATE_ABOVE_LIMIT]


def test_a_replacement_that_adds_an_input_and_pays_every_payment_is_approved() -> None:
    history = signed(two_coin_round(request("alice", "1", 150_000_000)))
    bigger = two_coin_round(
        request("alice", "1", 150_000_000),
        request("carol", "1", 60_000_000),
        coins=(0, 1, 2),
        fee_rate=BUMPED,
    )
    result = evaluate(bigger, history=history)
    assert isinstance(result, Approval)
    assert result.payments == 60_000_000


def test_a_replacement_that_leaves_an_input_of_the_replaced_transaction_unspent_is_refused() -> (
    None
):
    history = signed(two_coin_round(request("alice", "1", 150_000_000)))
    other_coins = two_coin_round(request("alice", "1", 150_000_000), coins=(0, 9), fee_rate=BUMPED)
    assert reasons(evaluate(other_coins, history=history)) == [Reason.DOUBLE_SIGN]


# --------------------------------------------------------------------------- fee ladder


def laddered(rungs: int = 3, step: int = 2_000, **changes: object) -> Manifest:
    return honest_manifest(ladder_rungs=rungs, ladder_step=step, **changes)


def test_a_round_with_a_fee_ladder_is_approved_with_every_rung_to_sign() -> None:
    m = laddered()
    result = evaluate(m)
    assert isinstance(result, Approval)
    assert result.rungs == 3 and len(result.psbts) == len(build_round(m).transactions) + 3


def test_the_ladder_counts_the_payments_once() -> None:
    result = evaluate(laddered())
    assert isinstance(result, Approval)
    assert result.payments == 55_000_000


def test_a_ladder_above_the_signers_fee_rate_limit_is_refused() -> None:
    config = policy(max_fee_rate=6_000)
    assert reasons(evaluate(laddered(), config=config)) == [Reason.FEE_RATE_ABOVE_LIMIT]


def test_a_ladder_whose_top_rung_pays_more_than_max_fee_is_refused() -> None:
    top = build_round(laddered()).rungs[-1].fee
    config = policy(max_fee=top - 1)
    assert reasons(evaluate(laddered(), config=config)) == [Reason.FEE_ABOVE_LIMIT]


def test_a_rung_that_pays_its_bump_to_someone_else_is_refused() -> None:
    m = laddered()
    plan = build_round(m)
    psbts = [p.serialize() for p in plan.psbts]
    rung = plan.rungs[0].psbt
    change = plan.change_vouts[0]
    assert change is not None
    outputs = list(rung.tx.outputs)
    outputs[change] = replace(outputs[change], script_pubkey=p2wpkh("mallory"))
    psbts[len(plan.transactions)] = with_outputs(rung, outputs).serialize()
    assert reasons(evaluate(m, psbts)) != []


def test_a_round_without_its_rungs_is_refused() -> None:
    m = laddered()
    psbts = [t.psbt.serialize() for t in build_round(m).transactions]
    assert isinstance(evaluate(m, psbts), list)


def test_after_a_ladder_is_signed_a_later_bump_of_its_transaction_is_judged_against_it() -> None:
    history = signed(laddered())
    bump = evaluate(laddered(fee_rate=BUMPED), history=history)
    lower = evaluate(laddered(fee_rate=1_000), history=history)
    assert isinstance(bump, Approval)
    assert reasons(lower) == [Reason.DOUBLE_SIGN]


# --------------------------------------------------------------------------- mutations


def test_extra_output_is_refused() -> None:
    def add(p: Psbt) -> Psbt:
        outputs = list(p.tx.outputs)
        outputs[-1] = replace(outputs[-1], value=outputs[-1].value - 10_000)
        return with_outputs(
            p, [*outputs, TxOut(10_000, p2wpkh("thief"))], [*p.outputs, PsbtOutput()]
        )

    assert reasons(evaluate(honest_manifest(), mutate(add))) == [Reason.EXTRA_OUTPUT]


def test_changed_amount_is_refused() -> None:
    def change(p: Psbt) -> Psbt:
        outputs = list(p.tx.outputs)
        outputs[0] = replace(outputs[0], value=outputs[0].value + 1)
        return with_outputs(p, outputs)

    assert reasons(evaluate(honest_manifest(), mutate(change))) == [Reason.AMOUNT_MISMATCH]


def test_changed_destination_is_refused() -> None:
    def change(p: Psbt) -> Psbt:
        outputs = list(p.tx.outputs)
        outputs[0] = replace(outputs[0], script_pubkey=p2wpkh("thief"))
        return with_outputs(p, outputs)

    assert reasons(evaluate(honest_manifest(), mutate(change))) == [Reason.DESTINATION_MISMATCH]


def test_change_sent_outside_the_pool_is_refused() -> None:
    vout = change_vout(honest_manifest())

    def steal(p: Psbt) -> Psbt:
        outputs = list(p.tx.outputs)
        outputs[vout] = replace(outputs[vout], script_pubkey=p2wpkh("thief"))
        return with_outputs(p, outputs)

    assert reasons(evaluate(honest_manifest(), mutate(steal))) == [Reason.CHANGE_NOT_TO_POOL]


def test_missing_output_is_refused() -> None:
    def drop(p: Psbt) -> Psbt:
        return with_outputs(p, list(p.tx.outputs[1:]), p.outputs[1:])

    assert reasons(evaluate(honest_manifest(), mutate(drop))) == [Reason.MISSING_OUTPUT]


def test_fee_above_the_cap_is_refused() -> None:
    result = evaluate(honest_manifest(), config=policy(max_fee=500))
    assert reasons(result) == [Reason.FEE_ABOVE_LIMIT]


def test_fee_rate_above_the_cap_is_refused() -> None:
    result = evaluate(honest_manifest(fee_rate=200_000))
    assert reasons(result) == [Reason.FEE_RATE_ABOVE_LIMIT]


def test_input_not_in_the_pool_is_refused() -> None:
    foreign = FOREIGN.derive(0, 0)

    def swap(p: Psbt) -> Psbt:
        inputs = list(p.tx.inputs)
        inputs[0] = TxIn(OutPoint(b"\x11" * 32, 0), inputs[0].sequence)
        psbt_inputs = list(p.inputs)
        psbt_inputs[0] = replace(
            psbt_inputs[0],
            witness_utxo=TxOut(BTC, foreign.script_pubkey),
            witness_script=foreign.witness_script,
            bip32_derivations=dict(zip(foreign.pubkeys, foreign.origins, strict=True)),
        )
        return replace(p, tx=replace(p.tx, inputs=tuple(inputs)), inputs=tuple(psbt_inputs))

    assert reasons(evaluate(honest_manifest(), mutate(swap))) == [Reason.INPUT_NOT_IN_POOL]


def test_extra_pool_input_is_refused() -> None:
    other = S1.derive(0, 99)

    def add(p: Psbt) -> Psbt:
        extra = TxIn(OutPoint(b"\x22" * 32, 1), p.tx.inputs[0].sequence)
        psbt_input = replace(
            p.inputs[0],
            witness_utxo=TxOut(BTC, other.script_pubkey),
            witness_script=other.witness_script,
            bip32_derivations=dict(zip(other.pubkeys, other.origins, strict=True)),
        )
        return replace(
            p, tx=replace(p.tx, inputs=(*p.tx.inputs, extra)), inputs=(*p.inputs, psbt_input)
        )

    assert reasons(evaluate(honest_manifest(), mutate(add))) == [Reason.EXTRA_INPUT]


def test_replaced_pool_input_is_refused() -> None:
    def swap(p: Psbt) -> Psbt:
        inputs = list(p.tx.inputs)
        inputs[0] = replace(inputs[0], prevout=OutPoint(b"\x33" * 32, 0))
        return replace(p, tx=replace(p.tx, inputs=tuple(inputs)))

    m = honest_manifest()
    assert len(build_round(m).transactions[0].psbt.tx.inputs) == 1
    # With one input, replacing it leaves nothing in common with the manifest's round.
    assert reasons(evaluate(m, mutate(swap))) == [Reason.MANIFEST_MISMATCH]
    two = honest_manifest(requests=(request("alice", "big", 150_000_000),))
    assert reasons(evaluate(two, mutate(swap, two))) == [Reason.UNKNOWN_INPUT]


def test_missing_input_is_refused() -> None:
    two = honest_manifest(requests=(request("alice", "big", 150_000_000),))

    def drop(p: Psbt) -> Psbt:
        return replace(p, tx=replace(p.tx, inputs=p.tx.inputs[:1]), inputs=p.inputs[:1])

    assert reasons(evaluate(two, mutate(drop, two))) == [Reason.MISSING_INPUT]


def test_understated_input_amount_is_refused() -> None:
    def lie(p: Psbt) -> Psbt:
        utxo0 = p.inputs[0].witness_utxo
        assert utxo0 is not None
        first = replace(p.inputs[0], witness_utxo=replace(utxo0, value=utxo0.value - 1))
        return replace(p, inputs=(first, *p.inputs[1:]))

    assert reasons(evaluate(honest_manifest(), mutate(lie))) == [Reason.INPUT_UTXO_MISMATCH]


def test_tampered_witness_script_is_refused() -> None:
    def tamper(p: Psbt) -> Psbt:
        script = FOREIGN.derive(0, 0).witness_script
        return replace(p, inputs=(replace(p.inputs[0], witness_script=script), *p.inputs[1:]))

    assert reasons(evaluate(honest_manifest(), mutate(tamper))) == [Reason.WITNESS_SCRIPT_MISMATCH]


def test_tampered_derivation_path_is_refused() -> None:
    def tamper(p: Psbt) -> Psbt:
        derivations = dict(p.inputs[0].bip32_derivations)
        pubkey, origin = next(iter(derivations.items()))
        derivations[pubkey] = replace(origin, path=(*origin.path[:-1], origin.path[-1] + 1))
        first = replace(p.inputs[0], bip32_derivations=derivations)
        return replace(p, inputs=(first, *p.inputs[1:]))

    assert reasons(evaluate(honest_manifest(), mutate(tamper))) == [Reason.DERIVATION_MISMATCH]


def test_sighash_other_than_all_is_refused() -> None:
    def anyonecanpay(p: Psbt) -> Psbt:
        return replace(p, inputs=(replace(p.inputs[0], sighash_type=0x81), *p.inputs[1:]))

    assert reasons(evaluate(honest_manifest(), mutate(anyonecanpay))) == [Reason.SIGHASH_NOT_ALL]


def test_changed_locktime_is_refused() -> None:
    def relock(p: Psbt) -> Psbt:
        return replace(p, tx=replace(p.tx, locktime=p.tx.locktime + 1))

    assert reasons(evaluate(honest_manifest(), mutate(relock))) == [Reason.TX_FIELDS_MISMATCH]


def test_psbts_of_another_manifest_are_refused() -> None:
    other = honest_manifest(utxos=(utxo(50, 3 * BTC, 300),))
    assert reasons(evaluate(honest_manifest(), psbts_of(other))) == [Reason.MANIFEST_MISMATCH]


def test_missing_psbt_is_refused() -> None:
    assert reasons(evaluate(honest_manifest(), [])) == [Reason.PSBT_COUNT_MISMATCH]


def test_input_of_an_unregistered_series_is_refused() -> None:
    m = honest_manifest()
    assert reasons(evaluate(m, registered={})) == [Reason.SERIES_NOT_REGISTERED]


def test_series_differing_from_the_registered_one_is_refused() -> None:
    registered = {1: make_series(1, 1, (0, 1, 2))}
    assert reasons(evaluate(honest_manifest(), registered=registered)) == [Reason.SERIES_MISMATCH]


def test_round_of_series_without_this_signers_key_is_refused() -> None:
    m = honest_manifest(series=(FOREIGN,))
    assert reasons(evaluate(m, registered={1: FOREIGN})) == [Reason.NOT_A_COSIGNER]


def test_wrong_network_is_refused() -> None:
    assert reasons(evaluate(honest_manifest(), network=TESTNET)) == [Reason.WRONG_NETWORK]


def test_replayed_round_with_different_outputs_is_refused() -> None:
    history = MemoryHistory()
    first = evaluate(honest_manifest(), history=history)
    assert isinstance(first, Approval)
    history.record(first, NOW)
    replay = honest_manifest(requests=(request("mallory", "1", 30_000_000),))
    result = evaluate(replay, history=history)
    assert reasons(result) == [Reason.DOUBLE_SIGN]
    assert isinstance(result, list) and result[0].scope is Scope.INPUT


def test_request_above_the_per_request_limit_is_refused_for_that_request() -> None:
    result = evaluate(honest_manifest(), config=policy(max_request_amount=25_000_000))
    assert reasons(result) == [Reason.REQUEST_LIMIT_EXCEEDED]
    assert isinstance(result, list)
    assert (result[0].scope, result[0].client_id, result[0].request_id) == (
        Scope.REQUEST,
        "alice",
        "1",
    )


def test_round_above_the_per_round_limit_is_refused() -> None:
    result = evaluate(honest_manifest(), config=policy(max_round_amount=50_000_000))
    assert reasons(result) == [Reason.ROUND_LIMIT_EXCEEDED]


def test_round_above_the_rolling_daily_limit_is_refused() -> None:
    history = MemoryHistory({}, [(NOW - 3600, 60_000_000)])
    result = evaluate(
        honest_manifest(), config=policy(max_daily_amount=100_000_000), history=history
    )
    assert reasons(result) == [Reason.DAILY_LIMIT_EXCEEDED]


def test_amounts_older_than_the_window_do_not_count() -> None:
    history = MemoryHistory({}, [(NOW - 25 * 3600, 60_000_000)])
    result = evaluate(
        honest_manifest(), config=policy(max_daily_amount=100_000_000), history=history
    )
    assert isinstance(result, Approval)


def test_denied_destination_is_refused_for_that_request() -> None:
    m = honest_manifest()
    bob = next(r for r in m.requests if (r.client_id, r.request_id) == ("bob", "2"))
    address = script_pubkey_to_address(bob.script_pubkey, REGTEST)
    assert address is not None
    result = evaluate(m, config=policy(deny_destinations=frozenset({address})))
    assert reasons(result) == [Reason.DESTINATION_DENIED]
    assert isinstance(result, list) and result[0].request_id == "2"


def test_destination_missing_from_the_allow_list_is_refused() -> None:
    m = honest_manifest()
    allowed = {
        script_pubkey_to_address(r.script_pubkey, REGTEST)
        for r in m.requests
        if r.client_id == "bob"
    }
    result = evaluate(m, config=policy(allow_destinations=frozenset(a for a in allowed if a)))
    assert reasons(result) == [Reason.DESTINATION_NOT_ALLOWED]
    assert isinstance(result, list) and result[0].client_id == "alice"


def test_oversized_manifest_is_refused() -> None:
    result = evaluate(honest_manifest(), config=policy(max_manifest_bytes=100))
    assert reasons(result) == [Reason.OVERSIZED_MESSAGE]


def test_too_many_psbts_are_refused() -> None:
    psbts = psbts_of(honest_manifest())
    result = evaluate(honest_manifest(), psbts * 3, config=policy(max_psbts=2))
    assert reasons(result) == [Reason.OVERSIZED_MESSAGE]


# --------------------------------------------------------------------------- bounded work


def large_manifest(n_requests: int, funds: int) -> Manifest:
    """``n_requests`` requests of 10,000..1,000,000 sat and ``funds`` satoshis in 0.1 BTC UTXOs."""
    amounts = [10_000 + (k * 7_919) % 990_001 for k in range(n_requests)]
    requests = [request(f"client{k % 40}", f"r{k}", a) for k, a in enumerate(amounts)]
    utxos = [utxo(i, BTC // 10, 100 + i, index=i) for i in range(-(-funds // (BTC // 10)))]
    return manifest([S1], utxos, requests)


def test_a_round_of_3000_requests_is_evaluated_and_approved() -> None:
    m = large_manifest(3000, 2 * BTC)
    plan = build_round(m)
    assert sum(1 for o in plan.requests if not o.outputs) > 0  # funds are short: deferral path
    assert isinstance(evaluate(m, [t.psbt.serialize() for t in plan.transactions]), Approval)


def test_a_round_of_3000_requests_with_a_changed_amount_is_refused() -> None:
    m = large_manifest(3000, 2 * BTC)

    def change(p: Psbt) -> Psbt:
        outputs = list(p.tx.outputs)
        outputs[1] = TxOut(outputs[1].value - 1, outputs[1].script_pubkey)
        return with_outputs(p, outputs)

    assert reasons(evaluate(m, mutate(change, m))) == [Reason.AMOUNT_MISMATCH]


def test_a_manifest_with_more_requests_than_max_requests_is_refused_before_the_rebuild() -> None:
    m = honest_manifest()
    result = evaluate(m, [], config=PolicyConfig(max_requests=2))  # no PSBTs: would not match
    assert reasons(result) == [Reason.ROUND_TOO_LARGE]
    assert isinstance(result, list) and "3 requests" in result[0].message
    assert isinstance(evaluate(m, config=PolicyConfig(max_requests=3)), Approval)


def test_a_manifest_with_more_utxos_than_max_inputs_is_refused_before_the_rebuild() -> None:
    m = honest_manifest()
    result = evaluate(m, [], config=PolicyConfig(max_inputs=3))  # no PSBTs: would not match
    assert reasons(result) == [Reason.ROUND_TOO_LARGE]
    assert isinstance(result, list) and "4 UTXOs" in result[0].message
    assert isinstance(evaluate(m, config=PolicyConfig(max_inputs=4)), Approval)


def test_the_caps_are_read_before_the_manifest_is_decoded() -> None:
    without_requests = encode_manifest(honest_manifest(requests=()))
    cut = without_requests[:-1] + bytes([3])  # three requests announced, none follows
    assert reasons(evaluate(cut, [])) == [Reason.MALFORMED_MANIFEST]
    result = evaluate(cut, [], config=PolicyConfig(max_requests=2))
    assert reasons(result) == [Reason.ROUND_TOO_LARGE]


def test_more_psbts_than_the_manifest_has_utxos_are_refused_before_the_rebuild() -> None:
    m = honest_manifest(utxos=(utxo(0, BTC, 100),))
    psbts = psbts_of(m)
    assert reasons(evaluate(m, psbts * 2)) == [Reason.PSBT_COUNT_MISMATCH]


def test_more_psbt_inputs_than_the_manifest_has_utxos_are_refused_before_the_rebuild() -> None:
    m = honest_manifest(utxos=(utxo(0, BTC, 100),))

    def add(p: Psbt) -> Psbt:
        extra = TxIn(OutPoint(bytes(32), 0), 0xFFFFFFFD)
        return replace(
            p, tx=replace(p.tx, inputs=(*p.tx.inputs, extra)), inputs=(*p.inputs, p.inputs[0])
        )

    result = evaluate(m, mutate(add, m))
    assert reasons(result) == [Reason.PSBT_COUNT_MISMATCH]


def test_malformed_psbt_bytes_are_refused() -> None:
    psbts = psbts_of(honest_manifest())
    result = evaluate(honest_manifest(), [psbts[0][:-7]])
    assert reasons(result) == [Reason.MALFORMED_PSBT]


def test_malformed_manifest_is_refused() -> None:
    data = encode_manifest(honest_manifest())
    result = evaluate(data[:-3], psbts_of(honest_manifest()))
    assert reasons(result) == [Reason.MALFORMED_MANIFEST]


def test_every_mutation_has_its_own_reason_code() -> None:
    codes = {
        name: value
        for name, value in globals().items()
        if name.startswith("test_") and name.endswith("_is_refused")
    }
    assert len(codes) >= 20


@pytest.mark.parametrize("reason", list(Reason))
def test_reason_codes_are_stable_upper_snake_strings(reason: Reason) -> None:
    assert reason.value == reason.name and reason.value.isupper()


def test_policy_hash_changes_with_any_setting() -> None:
    base = PolicyConfig()
    assert base.version_hash() == PolicyConfig().version_hash()
    assert base.version_hash() != PolicyConfig(max_fee=base.max_fee + 1).version_hash()
    assert (
        base.version_hash()
        != PolicyConfig(deny_destinations=frozenset({"bcrt1qexample"})).version_hash()
    )
    assert base.version_hash() != PolicyConfig(allow_operator_refunds=True).version_hash()


# --------------------------------------------------------------------------- series registration

OUR_KEY = next(k for k in S1.keys if k.origin.fingerprint == OURS)
OTHERS = frozenset(k.to_string(REGTEST) for k in S1.keys if k != OUR_KEY)
POOL_KEYS = frozenset(k.to_string(REGTEST) for k in make_series(9, 3, (0, 1, 2, 3, 4)).keys)


def own(key: object) -> bool:
    return key == OUR_KEY


def registrar(series: Series, **settings: object) -> PolicyConfig:
    """An operator's policy that approves ``series`` (and S1), with the pool's keys."""
    approved = {series_checksum(series, REGTEST), *APPROVED}
    return policy(cosigners=POOL_KEYS, approved_series=frozenset(approved), **settings)


def test_series_of_own_and_configured_cosigner_keys_may_be_registered() -> None:
    config = policy(cosigners=OTHERS)
    assert registration_refusal(config, S1, REGTEST, own) is None


def test_series_with_an_unconfigured_key_is_not_registered() -> None:
    config = policy(cosigners=frozenset(sorted(OTHERS)[:1]))
    refusal = registration_refusal(config, S1, REGTEST, own)
    assert refusal is not None and "neither this signer's key nor" in refusal


def test_series_below_the_minimum_threshold_is_not_registered() -> None:
    one_of_three = make_series(1, 1, (0, 1, 2))
    refusal = registration_refusal(registrar(one_of_three), one_of_three, REGTEST, own)
    assert refusal is not None and "below this signer's minimum of 2" in refusal


def test_a_series_without_this_signers_key_is_not_registered_even_of_configured_keys() -> None:
    others_only = make_series(2, 2, (3, 4))
    refusal = registration_refusal(registrar(others_only), others_only, REGTEST, own)
    assert refusal == "the series does not hold this signer's key"


def test_a_series_below_a_raised_minimum_threshold_is_not_registered() -> None:
    two_of_five = make_series(2, 2, (0, 1, 2, 3, 4))
    config = registrar(two_of_five, min_threshold=3)
    refusal = registration_refusal(config, two_of_five, REGTEST, own)
    assert refusal is not None and "threshold 2 is below this signer's minimum of 3" in refusal


def test_a_series_the_operator_did_not_approve_is_not_registered() -> None:
    three_of_four = make_series(2, 3, (0, 1, 3, 4))
    config = policy(cosigners=POOL_KEYS, min_threshold=3)
    refusal = registration_refusal(config, three_of_four, REGTEST, own)
    checksum = series_checksum(three_of_four, REGTEST)
    assert refusal is not None and f"series checksum {checksum}" in refusal
    assert "approved_series" in refusal
    approved = policy(cosigners=POOL_KEYS, min_threshold=3, approved_series=frozenset({checksum}))
    assert registration_refusal(approved, three_of_four, REGTEST, own) is None


def test_the_series_checksum_is_the_checksum_of_the_canonical_receive_descriptor() -> None:
    descriptor = S1.descriptor(0).to_string(REGTEST)
    assert series_checksum(S1, REGTEST) == descriptor.rpartition("#")[2]
    reordered = Series(1, 2, tuple(reversed(S1.keys)), SeriesState.ACTIVE)
    assert series_checksum(reordered, REGTEST) == series_checksum(S1, REGTEST)
    assert series_checksum(make_series(1, 3, (0, 1, 2)), REGTEST) != series_checksum(S1, REGTEST)


def test_retiring_series_without_this_signers_key_need_not_be_registered() -> None:
    old = make_series(1, 2, (7, 8, 9), SeriesState.RETIRING)
    new = make_series(2, 2, (0, 1, 2))
    m = manifest(
        [old, new],
        [utxo(1, BTC, 100, series=1), utxo(2, BTC, 200, series=2)],
        [request("alice", "1", 150_000_000)],
        change_index=((2, 0),),
    )
    assert isinstance(evaluate(m, registered={2: new}), Approval)


# --------------------------------------------------------------------------- where change goes

THIEVES = make_series(2, 2, (3, 4))
"""Two colluding operators' keys: what a downgrade would move the pool into."""


def sweep_into(active: Series, value: int = 40 * BTC) -> Manifest:
    """A round spending S1 (retiring) that pays a small request and sends the rest as change to
    ``active``."""
    old = replace(S1, state=SeriesState.RETIRING)
    return manifest(
        [old, active],
        [utxo(1, value, 100, series=1)],
        [request("alice", "1", 20_000)],
        change_index=((active.id, 0),),
    )


def test_change_to_the_series_the_coins_come_from_counts_toward_nothing() -> None:
    result = evaluate(honest_manifest())
    assert isinstance(result, Approval)
    assert (result.payments, result.moves) == (55_000_000, 0)


def test_change_to_an_unapproved_series_is_a_payment() -> None:
    m = sweep_into(THIEVES, value=BTC)
    result = evaluate(m)
    assert isinstance(result, Approval)
    change = build_round(m).transactions[0].change
    assert change is not None
    assert result.payments == 20_000 + change.value
    assert result.moves == 0


def test_change_to_a_series_of_other_operators_is_refused_as_a_payment_above_the_limit() -> None:
    result = evaluate(sweep_into(THIEVES))
    assert reasons(result) == [Reason.DESTINATION_LIMIT_EXCEEDED]
    assert isinstance(result, list) and (result[0].scope, result[0].psbt_index) == (Scope.ROUND, 0)
    assert "change to a series this signer has not approved is a payment" in result[0].message


def test_change_to_a_registered_series_the_operator_no_longer_approves_is_a_payment() -> None:
    successor = make_series(2, 2, (0, 1, 3))
    registered = {1: S1, 2: successor}
    result = evaluate(sweep_into(successor), registered=registered)
    assert reasons(result) == [Reason.DESTINATION_LIMIT_EXCEEDED]


def test_change_to_an_approved_successor_is_a_move() -> None:
    successor = make_series(2, 2, (0, 1, 3))
    approved = frozenset({*APPROVED, series_checksum(successor, REGTEST)})
    m = sweep_into(successor)
    result = evaluate(m, registered={1: S1, 2: successor}, config=policy(approved_series=approved))
    assert isinstance(result, Approval)
    change = build_round(m).transactions[0].change
    assert change is not None
    assert (result.payments, result.moves) == (20_000, change.value)


def test_moves_above_the_rolling_move_limit_are_refused() -> None:
    successor = make_series(2, 2, (0, 1, 3))
    approved = frozenset({*APPROVED, series_checksum(successor, REGTEST)})
    history = MemoryHistory(moves=[(NOW - 3600, 30 * BTC)])
    config = policy(approved_series=approved, max_daily_move_amount=60 * BTC)
    result = evaluate(
        sweep_into(successor), registered={1: S1, 2: successor}, config=config, history=history
    )
    assert reasons(result) == [Reason.MOVE_DAILY_LIMIT_EXCEEDED]


def test_an_active_series_that_differs_from_the_registered_one_is_refused() -> None:
    impostor = make_series(2, 2, (0, 3, 4))
    registered = {1: S1, 2: make_series(2, 2, (0, 1, 3))}
    assert reasons(evaluate(sweep_into(impostor), registered=registered)) == [
        Reason.SERIES_MISMATCH
    ]


# --------------------------------------------------------------------------- limits that add up


def same_destination(*amounts: int, extra_fee: int = 0) -> Manifest:
    """Requests of ``amounts`` to one address, with enough coins."""
    requests = [
        WithdrawalRequest(f"client-{i}", "1", p2wpkh("one address"), amount, extra_fee)
        for i, amount in enumerate(amounts)
    ]
    utxos = [utxo(i, 6 * BTC, 100 + i, index=i) for i in range(2 * len(amounts) + 1)]
    return manifest([S1], utxos, requests)


def test_payments_split_across_requests_to_one_destination_are_summed_in_a_round() -> None:
    m = same_destination(550_000_000, 550_000_000)
    result = evaluate(m, config=policy(max_request_amount=10 * BTC))
    assert reasons(result) == [Reason.DESTINATION_LIMIT_EXCEEDED]
    assert isinstance(result, list)
    second = m.requests[1]
    assert (result[0].scope, result[0].client_id) == (Scope.REQUEST, second.client_id)


def test_the_requests_to_a_destination_within_its_limit_are_approved() -> None:
    result = evaluate(same_destination(5 * BTC, 5 * BTC), config=policy())
    assert isinstance(result, Approval)
    assert result.destinations == ((p2wpkh("one address"), 10 * BTC),)


def test_a_request_refused_for_another_reason_adds_nothing_to_its_destination() -> None:
    m = same_destination(11 * BTC, 5 * BTC)
    result = evaluate(m, config=policy(max_destination_amount=11 * BTC))
    assert reasons(result) == [Reason.REQUEST_LIMIT_EXCEEDED]


def test_payments_to_one_destination_are_summed_over_the_rolling_window() -> None:
    history = MemoryHistory(paid_to=[(NOW - 3600, p2wpkh("one address"), 15 * BTC)])
    result = evaluate(same_destination(6 * BTC), history=history)
    assert reasons(result) == [Reason.DESTINATION_DAILY_LIMIT_EXCEEDED]
    assert isinstance(result, list) and result[0].scope is Scope.REQUEST


def test_payments_to_a_destination_before_the_window_do_not_count() -> None:
    history = MemoryHistory(paid_to=[(NOW - 25 * 3600, p2wpkh("one address"), 15 * BTC)])
    assert isinstance(evaluate(same_destination(6 * BTC), history=history), Approval)


def test_an_extra_fee_above_the_fee_rate_is_refused_for_its_request() -> None:
    m = same_destination(BTC, extra_fee=500_000)
    result = evaluate(m)
    assert reasons(result) == [Reason.TX_FEE_RATE_ABOVE_LIMIT]
    assert isinstance(result, list)
    assert (result[0].scope, result[0].client_id) == (Scope.REQUEST, "client-0")


def test_an_extra_fee_within_the_fee_rate_is_approved() -> None:
    assert isinstance(evaluate(same_destination(BTC, extra_fee=1_000)), Approval)


def test_the_whole_fee_is_bounded_per_worst_case_signed_vsize() -> None:
    m = same_destination(BTC, extra_fee=20_000)
    planned = build_round(m).transactions[0]
    size = signed_vsize(planned.psbt)
    just_enough = (planned.fee - 1) * 1000 // size + 1  # the fee rounds up to the satoshi
    assert isinstance(evaluate(m, config=policy(max_fee_rate=just_enough)), Approval)
    assert reasons(evaluate(m, config=policy(max_fee_rate=just_enough - 1))) == [
        Reason.TX_FEE_RATE_ABOVE_LIMIT
    ]


def test_signed_vsize_is_the_worst_case_of_the_signed_transaction() -> None:
    m = honest_manifest()
    for planned in build_round(m).transactions:
        if planned.change is not None:  # the algorithm's weight counts a change output
            assert signed_vsize(planned.psbt) == (planned.max_weight + 3) // 4
        signed = sign_first_m(planned.psbt, m)
        assert signed.vsize <= signed_vsize(planned.psbt)


# --------------------------------------------------------------------------- the signing log


def test_the_same_transaction_under_another_manifest_is_refused() -> None:
    history = MemoryHistory()
    first = evaluate(honest_manifest(), history=history)
    assert isinstance(first, Approval)
    history.record(first, NOW)
    other_tip = honest_manifest(tip_hash=bytes(32))
    assert build_round(other_tip).transactions[0].txid_hex == first.txids[0]
    result = evaluate(other_tip, history=history)
    assert reasons(result) == [Reason.SAME_TX_OTHER_MANIFEST]
    assert isinstance(result, list) and result[0].scope is Scope.INPUT


def test_an_understated_input_amount_rebuilding_the_signed_transaction_is_refused() -> None:
    """The segwit v0 fee attack: no change, so an input claimed smaller only lowers the fee the
    signer sees, and the second manifest rebuilds to the transaction signed under the first."""
    m = no_change_round(BTC)
    history = MemoryHistory()
    first = evaluate(m, history=history)
    assert isinstance(first, Approval)
    history.record(first, NOW)
    lie = no_change_round(BTC - 200, amount_of=m)
    assert build_round(lie).transactions[0].txid_hex == first.txids[0]
    assert reasons(evaluate(lie, history=history)) == [Reason.SAME_TX_OTHER_MANIFEST]


def no_change_round(value: int, amount_of: Manifest | None = None) -> Manifest:
    """One coin of ``value`` paying one request with a remainder below the dust limit (left to
    the fee); ``amount_of`` reuses another such round's request."""
    if amount_of is not None:
        requests = amount_of.requests
    else:
        probe = manifest([S1], [utxo(1, value, 100)], [request("alice", "1", value // 2)])
        fee = build_round(probe).transactions[0].fee
        requests = (request("alice", "1", value - fee - 300),)
    m = manifest([S1], [utxo(1, value, 100)], requests)
    assert build_round(m).transactions[0].change is None
    return m
