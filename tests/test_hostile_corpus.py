"""The hostile-coordinator corpus, against real signer daemons on a regtest pool.

A coordinator holding a valid certificate is the attacker here: it sends SignRound requests that
differ from an honest round in one way each. Every mutation runs against both backends, the
software emulator (signer-1) and HWI driving the Jade-protocol emulator (signer-3), over mutual
TLS, on coins that really are the pool's on the bcoin regtest node: each must come back with no
signature and with the reason code the mutation is about (the policy's first objection).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import pytest

from pool.address import script_pubkey_to_address
from pool.hashes import sha256
from pool.manifest import Manifest, Utxo, WithdrawalRequest, encode_manifest
from pool.networks import REGTEST
from pool.psbt import Psbt, PsbtOutput
from pool.series import CHANGE, RECEIVE, Series
from pool.tx import OutPoint, TxIn, TxOut
from pool.vocabulary import Reason
from pool.withdrawal import build_round
from tests.factories import BTC, make_series, p2wpkh
from vpool.devnet.pool import DevPool
from vpool.devnet.processes import master_of, mnemonic_for
from vpool.v1 import signer_pb2, signer_pb2_grpc

BACKENDS = ("signer-1", "signer-3")
"""The emulator backend, and the HWI backend behind the Jade-protocol emulator."""
COINS = 6
DENIED = p2wpkh("a denied destination")
POLICY = {
    "max_request_amount": 2 * BTC,
    "max_round_amount": 5 * BTC,
    "max_daily_amount": 1000 * BTC,
    "max_fee": 50_000,
    "max_destination_amount": 2 * BTC,
    "deny_destinations": [script_pubkey_to_address(DENIED, REGTEST)],
}
CALL_TIMEOUT = 60.0
FOREIGN = make_series(1, 2, (7, 8, 9))
FOREIGN_CHANGE = FOREIGN.derive(CHANGE, 0)
SIGNER_2 = master_of(mnemonic_for("vpool devnet signer 2")).fingerprint

_POOL: list[DevPool] = []
"""The corpus's pool, for the mutations that name real blocks of its node."""
Built = tuple[bytes, list[bytes]]
"""A SignRound's manifest bytes and PSBTs."""


@dataclass(frozen=True)
class Corpus:
    pool: DevPool
    honest: Manifest

    def stub(self, signer_id: str) -> signer_pb2_grpc.SignerServiceStub:
        return self.pool.daemons[signer_id].stub(self.pool.pki)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    pool = DevPool(tmp_path_factory.mktemp("corpus"), signer_policy=dict(POLICY))
    with pool:
        _POOL[:] = [pool]
        yield Corpus(pool, _honest_manifest(pool, _coins(pool)))


def _coins(pool: DevPool) -> list[Utxo]:
    """``COINS`` confirmed coins of 1 BTC on receive addresses the coordinator never hands out."""
    scripts = [pool.series.derive(RECEIVE, 900 + i).script_pubkey for i in range(COINS)]
    txid = pool.wallet.fund(pool.node, [(s, BTC) for s in scripts])
    pool.mine(12)  # deep enough for a tip ten blocks old to still hold them
    height = pool.node.chain.tip()[0] - 11
    outputs = [o.script_pubkey for o in pool.transaction(txid).outputs]
    return [
        Utxo(
            OutPoint.from_hex(txid, outputs.index(s)), BTC, pool.series.id, RECEIVE, 900 + i, height
        )
        for i, s in enumerate(scripts)
    ]


def _honest_manifest(pool: DevPool, coins: list[Utxo]) -> Manifest:
    height, tip_hash = pool.node.chain.tip()
    return Manifest(
        network="regtest",
        series=(pool.series,),
        utxos=tuple(coins),
        tip_height=height,
        tip_hash=bytes.fromhex(tip_hash),
        fee_rate=2_000,
        change_index=((pool.series.id, 900),),
        dust_limit=546,
        max_weight=400_000,
        min_conf=1,
        requests=(
            _request("alice", "1", 150_000_000),
            _request("bob", "1", 30_000_000),
            _request("bob", "2", 5_000_000),
        ),
    )


def _request(client: str, request_id: str, amount: int, extra_fee: int = 0) -> WithdrawalRequest:
    return WithdrawalRequest(
        client, request_id, p2wpkh(f"{client}/{request_id}"), amount, extra_fee
    )


# --------------------------------------------------------------------------- mutation helpers


def _psbts(m: Manifest) -> list[Psbt]:
    return [t.psbt for t in build_round(m).transactions]


def _honest(m: Manifest) -> Built:
    return encode_manifest(m), [p.serialize() for p in _psbts(m)]


def _manifest(**changes: object) -> Callable[[Manifest], Built]:
    """A manifest changed consistently: its own PSBTs, as an honest coordinator would build."""
    return lambda m: _honest(replace(m, **changes))  # type: ignore[arg-type]


def _psbt0(change: Callable[[Psbt], Psbt]) -> Callable[[Manifest], Built]:
    """The honest manifest, with its first PSBT changed."""

    def build(m: Manifest) -> Built:
        psbts = _psbts(m)
        return encode_manifest(m), [change(psbts[0]).serialize()] + [
            p.serialize() for p in psbts[1:]
        ]

    return build


def _outputs(p: Psbt, outputs: list[TxOut], maps: list[PsbtOutput] | None = None) -> Psbt:
    return replace(p, tx=replace(p.tx, outputs=tuple(outputs)), outputs=tuple(maps or p.outputs))


def _change_vout(m: Manifest) -> int:
    change = build_round(m).transactions[0].change
    assert change is not None
    return change.vout


def _with_output(k: Callable[[Manifest, Psbt], int], **changes: object) -> Callable[..., Built]:
    """The first PSBT with output ``k(m, psbt)`` changed (``value``/``script_pubkey``)."""

    def build(m: Manifest) -> Built:
        def change(p: Psbt) -> Psbt:
            outputs = list(p.tx.outputs)
            vout = k(m, p)
            outputs[vout] = replace(outputs[vout], **changes)  # type: ignore[arg-type]
            return _outputs(p, outputs)

        return _psbt0(change)(m)

    return build


def _input0(**changes: object) -> Callable[[Manifest], Built]:
    """The first PSBT with its first input map changed."""
    return _psbt0(lambda p: replace(p, inputs=(replace(p.inputs[0], **changes), *p.inputs[1:])))  # type: ignore[arg-type]


def _witness_spent_coin(**changes: object) -> Callable[[Manifest], Built]:
    def change(p: Psbt) -> Psbt:
        utxo = p.inputs[0].witness_utxo
        assert utxo is not None
        first = replace(p.inputs[0], witness_utxo=replace(utxo, **changes))  # type: ignore[arg-type]
        return replace(p, inputs=(first, *p.inputs[1:]))

    return _psbt0(change)


def _tx0(**changes: object) -> Callable[[Manifest], Built]:
    return _psbt0(lambda p: replace(p, tx=replace(p.tx, **changes)))  # type: ignore[arg-type]


def _txin0(**changes: object) -> Callable[[Manifest], Built]:
    def change(p: Psbt) -> Psbt:
        inputs = list(p.tx.inputs)
        inputs[0] = replace(inputs[0], **changes)  # type: ignore[arg-type]
        return replace(p, tx=replace(p.tx, inputs=tuple(inputs)))

    return _psbt0(change)


def _add_input(m: Manifest) -> Built:
    other = m.series[0].derive(RECEIVE, 999)

    def add(p: Psbt) -> Psbt:
        extra = TxIn(OutPoint(sha256(b"not a pool coin"), 1), p.tx.inputs[0].sequence)
        psbt_input = replace(
            p.inputs[0],
            witness_utxo=TxOut(BTC, other.script_pubkey),
            witness_script=other.witness_script,
            bip32_derivations=dict(zip(other.pubkeys, other.origins, strict=True)),
        )
        return replace(
            p, tx=replace(p.tx, inputs=(*p.tx.inputs, extra)), inputs=(*p.inputs, psbt_input)
        )

    return _psbt0(add)(m)


def _foreign_input(m: Manifest) -> Built:
    foreign = FOREIGN.derive(RECEIVE, 0)

    def swap(p: Psbt) -> Psbt:
        inputs = list(p.tx.inputs)
        inputs[0] = TxIn(OutPoint(sha256(b"foreign coin"), 0), inputs[0].sequence)
        first = replace(
            p.inputs[0],
            witness_utxo=TxOut(BTC, foreign.script_pubkey),
            witness_script=foreign.witness_script,
            bip32_derivations=dict(zip(foreign.pubkeys, foreign.origins, strict=True)),
        )
        return replace(p, tx=replace(p.tx, inputs=tuple(inputs)), inputs=(first, *p.inputs[1:]))

    return _psbt0(swap)(m)


def _extra_output(m: Manifest) -> Built:
    def add(p: Psbt) -> Psbt:
        outputs = list(p.tx.outputs)
        outputs[-1] = replace(outputs[-1], value=outputs[-1].value - 10_000)
        return _outputs(p, [*outputs, TxOut(10_000, p2wpkh("thief"))], [*p.outputs, PsbtOutput()])

    return _psbt0(add)(m)


def _drop_output(m: Manifest) -> Built:
    return _psbt0(lambda p: _outputs(p, list(p.tx.outputs[1:]), list(p.outputs[1:])))(m)


def _swap_outputs(m: Manifest) -> Built:
    def swap(p: Psbt) -> Psbt:
        return _outputs(p, list(reversed(p.tx.outputs)), list(reversed(p.outputs)))

    return _psbt0(swap)(m)


def _tamper_derivation(m: Manifest) -> Built:
    def tamper(p: Psbt) -> Psbt:
        derivations = dict(p.inputs[0].bip32_derivations)
        pubkey, origin = next(iter(derivations.items()))
        derivations[pubkey] = replace(origin, path=(*origin.path[:-1], origin.path[-1] + 1))
        return replace(
            p, inputs=(replace(p.inputs[0], bip32_derivations=derivations), *p.inputs[1:])
        )

    return _psbt0(tamper)(m)


def _tamper_output_map(m: Manifest, **changes: object) -> Built:
    vout = _change_vout(m)

    def tamper(p: Psbt) -> Psbt:
        maps = list(p.outputs)
        maps[vout] = replace(maps[vout], **changes)  # type: ignore[arg-type]
        return replace(p, outputs=tuple(maps))

    return _psbt0(tamper)(m)


def _partial_sig(m: Manifest) -> Built:
    def add(p: Psbt) -> Psbt:
        pubkey = next(iter(p.inputs[0].bip32_derivations))
        signature = b"\x30\x06\x02\x01\x01\x02\x01\x01\x01"
        first = replace(p.inputs[0], partial_sigs={pubkey: signature})
        return replace(p, inputs=(first, *p.inputs[1:]))

    return _psbt0(add)(m)


def _txin0_vout(m: Manifest) -> Built:
    def change(p: Psbt) -> Psbt:
        inputs = list(p.tx.inputs)
        prevout = inputs[0].prevout
        inputs[0] = replace(inputs[0], prevout=OutPoint(prevout.txid, prevout.vout + 50))
        return replace(p, tx=replace(p.tx, inputs=tuple(inputs)))

    return _psbt0(change)(m)


def _other_coins_psbts(m: Manifest) -> Built:
    other = replace(m, utxos=m.utxos[-1:], requests=m.requests[1:])
    return encode_manifest(m), [p.serialize() for p in _psbts(other)]


def _appended(m: Manifest) -> Built:
    data, psbts = _honest(m)
    return data, [*psbts, *_honest(replace(m, requests=m.requests[1:]))[1]]


def _version(version: int) -> Callable[[Manifest], Built]:
    def build(m: Manifest) -> Built:
        data, psbts = _honest(m)
        return data[:5] + version.to_bytes(4, "little") + data[9:], psbts

    return build


def _other_manifest_psbts(m: Manifest) -> Built:
    other = replace(m, requests=m.requests[:1])
    return encode_manifest(m), [p.serialize() for p in _psbts(other)]


def _series(m: Manifest, series: Series) -> Manifest:
    return replace(m, series=(series,), change_index=((series.id, 900),))


def _key_swapped(m: Manifest) -> Built:
    """Series 1 with signer-2's key replaced by a foreign one (the tested signers' kept)."""
    keys = tuple(
        FOREIGN.keys[0] if k.origin.fingerprint == SIGNER_2 else k for k in m.series[0].keys
    )
    return _honest(_series(m, Series(1, m.series[0].m, keys, m.series[0].state)))


def _renumbered(m: Manifest) -> Built:
    """The pool's keys as series 7, never registered (coins claimed to belong to it)."""
    series = Series(7, m.series[0].m, m.series[0].keys, m.series[0].state)
    utxos = tuple(replace(u, series_id=7) for u in m.utxos)
    return _honest(replace(m, series=(series,), change_index=((7, 900),), utxos=utxos))


def _weaker(m: Manifest) -> Built:
    series = replace(m.series[0], m=1)
    return _honest(_series(m, series))


def _foreign_series(m: Manifest) -> Built:
    return _honest(_series(m, FOREIGN))


def _testnet(m: Manifest) -> Built:
    data = bytearray(encode_manifest(m))
    data[9] = 1  # the network code (mainnet 0, testnet 1, ...) after magic and versions
    return bytes(data), _honest(m)[1]


def _truncated(m: Manifest) -> Built:
    data, psbts = _honest(m)
    return data[:-3], psbts


def _trailing(m: Manifest) -> Built:
    data, psbts = _honest(m)
    return data + b"\x00", psbts


def _cut_psbt(m: Manifest) -> Built:
    data, psbts = _honest(m)
    return data, [psbts[0][:-7], *psbts[1:]]


def _psbt_v2(m: Manifest) -> Built:
    data, psbts = _honest(m)
    version = b"\x01\xfb\x04" + (2).to_bytes(4, "little")  # PSBT_GLOBAL_VERSION = 2
    return data, [psbts[0][:5] + version + psbts[0][5:], *psbts[1:]]


def _doubled(m: Manifest) -> Built:
    data, psbts = _honest(m)
    return data, psbts * 2


def _no_psbts(m: Manifest) -> Built:
    return encode_manifest(m), []


def _requests(
    *amounts: int, extra_fee: int = 0, to: bytes | None = None
) -> Callable[[Manifest], Built]:
    """The honest manifest paying ``amounts`` to carol (or ``to``), the first with
    ``extra_fee``."""

    def build(m: Manifest) -> Built:
        requests = tuple(
            WithdrawalRequest(
                "carol", str(i), to or p2wpkh(f"carol/{i}"), amount, extra_fee if i == 0 else 0
            )
            for i, amount in enumerate(amounts)
        )
        return _honest(replace(m, requests=requests))

    return build


def _spent_coin(**changes: object) -> Callable[[Manifest], Built]:
    """A consistent manifest (its own PSBTs) that lies about the first coin the honest round
    spends."""

    def build(m: Manifest) -> Built:
        first = build_round(m).transactions[0].psbt.tx.inputs[0].prevout
        utxos = tuple(
            replace(u, **changes) if u.outpoint == first else u  # type: ignore[arg-type]
            for u in m.utxos
        )
        return _honest(replace(m, utxos=utxos))

    return build


def _tip(height: int, invented: bytes | None = None) -> Callable[[Manifest], Built]:
    """A consistent manifest pinned ``height`` blocks from the honest tip, at the block the node
    has there or at an ``invented`` hash."""

    def build(m: Manifest) -> Built:
        at = m.tip_height + height
        tip_hash = invented or bytes.fromhex(_POOL[0].node.chain.block_hash(at))
        return _honest(replace(m, tip_height=at, tip_hash=tip_hash))

    return build


# --------------------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class Mutation:
    name: str
    build: Callable[[Manifest], Built]
    reason: Reason


MUTATIONS = [
    # what is paid
    Mutation("an extra output to a thief", _extra_output, Reason.EXTRA_OUTPUT),
    Mutation("a payment missing", _drop_output, Reason.MISSING_OUTPUT),
    Mutation("a payment one satoshi larger", _with_output(lambda m, p: 0, value=150_000_001),
             Reason.AMOUNT_MISMATCH),
    Mutation("a payment one satoshi smaller", _with_output(lambda m, p: 0, value=149_999_999),
             Reason.AMOUNT_MISMATCH),
    Mutation("a payment to another address",
             _with_output(lambda m, p: 0, script_pubkey=p2wpkh("thief")),
             Reason.DESTINATION_MISMATCH),
    Mutation("the change to a thief",
             _with_output(lambda m, p: _change_vout(m), script_pubkey=p2wpkh("thief")),
             Reason.CHANGE_NOT_TO_POOL),
    Mutation("the change to the foreign multisig",
             _with_output(lambda m, p: _change_vout(m),
                          script_pubkey=FOREIGN.derive(CHANGE, 0).script_pubkey),
             Reason.CHANGE_NOT_TO_POOL),
    Mutation("the change larger", _with_output(lambda m, p: _change_vout(m), value=10 * BTC),
             Reason.AMOUNT_MISMATCH),
    Mutation("the outputs in another order", _swap_outputs, Reason.DESTINATION_MISMATCH),
    Mutation("the change output's witness script replaced",
             lambda m: _tamper_output_map(m, witness_script=FOREIGN_CHANGE.witness_script),
             Reason.WITNESS_SCRIPT_MISMATCH),
    Mutation("the change output's key paths removed",
             lambda m: _tamper_output_map(m, bip32_derivations={}), Reason.DERIVATION_MISMATCH),
    # what is spent
    Mutation("an extra input not in the manifest", _add_input, Reason.EXTRA_INPUT),
    Mutation("an input swapped for a foreign coin", _foreign_input, Reason.INPUT_NOT_IN_POOL),
    Mutation("an input's outpoint replaced",
             _txin0(prevout=OutPoint(sha256(b"another coin"), 0)), Reason.UNKNOWN_INPUT),
    Mutation("an input's amount under-stated in the PSBT",
             _witness_spent_coin(value=BTC - 1), Reason.INPUT_UTXO_MISMATCH),
    Mutation("an input's amount over-stated in the PSBT",
             _witness_spent_coin(value=BTC + 1), Reason.INPUT_UTXO_MISMATCH),
    Mutation("an input's script replaced in the PSBT",
             _witness_spent_coin(script_pubkey=p2wpkh("thief")), Reason.INPUT_UTXO_MISMATCH),
    Mutation("an input's witness script replaced",
             _input0(witness_script=FOREIGN.derive(RECEIVE, 0).witness_script),
             Reason.WITNESS_SCRIPT_MISMATCH),
    Mutation("an input's key path changed", _tamper_derivation, Reason.DERIVATION_MISMATCH),
    Mutation("an input signed with SIGHASH_ALL|ANYONECANPAY", _input0(sighash_type=0x81),
             Reason.SIGHASH_NOT_ALL),
    Mutation("an input signed with SIGHASH_NONE", _input0(sighash_type=0x02),
             Reason.SIGHASH_NOT_ALL),
    Mutation("an input carrying a partial signature", _partial_sig, Reason.PSBT_MISMATCH),
    Mutation("an input carrying a final witness", _input0(final_script_witness=(b"\x00",)),
             Reason.PSBT_MISMATCH),
    Mutation("an input carrying an unknown field", _input0(unknown={b"\xfc\x01": b"\x01"}),
             Reason.PSBT_MISMATCH),
    # the transaction's own fields
    Mutation("another locktime", _tx0(locktime=0), Reason.TX_FIELDS_MISMATCH),
    Mutation("another version", _tx0(version=1), Reason.TX_FIELDS_MISMATCH),
    Mutation("an input without RBF", _txin0(sequence=0xFFFFFFFF), Reason.TX_FIELDS_MISMATCH),
    # the round as a whole
    Mutation("the PSBTs of a manifest with fewer requests", _other_manifest_psbts,
             Reason.MISSING_OUTPUT),
    Mutation("the PSBTs of a manifest over other coins", _other_coins_psbts,
             Reason.MANIFEST_MISMATCH),
    Mutation("a PSBT of another round appended", _appended, Reason.PSBT_COUNT_MISMATCH),
    Mutation("a manifest of an unknown algorithm version", _version(99),
             Reason.MALFORMED_MANIFEST),
    Mutation("a manifest of algorithm version 1", _version(1), Reason.MALFORMED_MANIFEST),
    Mutation("a manifest with no request", _manifest(requests=()), Reason.NOTHING_TO_SIGN),
    Mutation("no PSBT", _no_psbts, Reason.PSBT_COUNT_MISMATCH),
    Mutation("every PSBT twice", _doubled, Reason.PSBT_COUNT_MISMATCH),
    Mutation("a PSBT cut short", _cut_psbt, Reason.MALFORMED_PSBT),
    Mutation("a PSBT of version 2", _psbt_v2, Reason.MALFORMED_PSBT),
    Mutation("a manifest cut short", _truncated, Reason.MALFORMED_MANIFEST),
    Mutation("a manifest with trailing bytes", _trailing, Reason.MALFORMED_MANIFEST),
    Mutation("a manifest for testnet", _testnet, Reason.WRONG_NETWORK),
    # series
    Mutation("the pool's keys under an unregistered series id", _renumbered,
             Reason.SERIES_NOT_REGISTERED),
    Mutation("the registered series with a threshold of 1", _weaker, Reason.SERIES_MISMATCH),
    Mutation("a series without this signer's key", _foreign_series, Reason.NOT_A_COSIGNER),
    Mutation("the registered series with a key swapped", _key_swapped, Reason.SERIES_MISMATCH),
    # limits
    Mutation("a fee rate above the signer's limit", _manifest(fee_rate=200_000),
             Reason.FEE_RATE_ABOVE_LIMIT),
    Mutation("a request above the per-request limit", _requests(2 * BTC + 1),
             Reason.REQUEST_LIMIT_EXCEEDED),
    Mutation("3,000 requests paying more fee than the signer allows",
             _requests(*[200_000] * 3000), Reason.FEE_ABOVE_LIMIT),
    Mutation("3,001 requests, above the signer's cap", _requests(*[10_000] * 3001),
             Reason.ROUND_TOO_LARGE),
    Mutation("a round above the per-round limit", _requests(BTC, BTC, BTC, BTC, BTC + 1),
             Reason.ROUND_LIMIT_EXCEEDED),
    Mutation("a fee above the signer's limit",
             lambda m: _requests(190_000_000, 190_000_000)(replace(m, fee_rate=99_000)),
             Reason.FEE_ABOVE_LIMIT),
    Mutation("a payment to a denied destination", _requests(BTC, to=DENIED),
             Reason.DESTINATION_DENIED),
    Mutation("an output's value zero", _with_output(lambda m, p: 0, value=0),
             Reason.AMOUNT_MISMATCH),
    Mutation("an input's outpoint index changed", _txin0_vout, Reason.UNKNOWN_INPUT),
    Mutation("two requests to one address past the destination limit",
             _requests(BTC, BTC + 1, to=p2wpkh("one address")), Reason.DESTINATION_LIMIT_EXCEEDED),
    Mutation("an extra fee far above the fee rate", _requests(BTC, extra_fee=40_000),
             Reason.TX_FEE_RATE_ABOVE_LIMIT),
    # the manifest's picture of the chain, checked against the signer's own node
    Mutation("a coin's amount under-stated in the manifest", _spent_coin(value=BTC // 2),
             Reason.INPUT_AMOUNT_MISMATCH),
    Mutation("a coin's amount over-stated in the manifest", _spent_coin(value=2 * BTC),
             Reason.INPUT_AMOUNT_MISMATCH),
    Mutation("a coin that does not exist",
             lambda m: _spent_coin(
                 outpoint=OutPoint(sha256(b"an invented coin"), 0), height=m.utxos[0].height - 1
             )(m),  # older than the others: spent first
             Reason.INPUT_NOT_ON_CHAIN),
    Mutation("a coin's branch lied about", _spent_coin(branch=CHANGE),
             Reason.INPUT_SCRIPT_MISMATCH),
    Mutation("a coin's index lied about", _spent_coin(index=901), Reason.INPUT_SCRIPT_MISMATCH),
    Mutation("a coin's height lied about", lambda m: _spent_coin(height=m.utxos[0].height - 1)(m),
             Reason.INPUT_HEIGHT_MISMATCH),
    Mutation("a tip a hundred blocks ahead", _tip(100, sha256(b"a block from the future")),
             Reason.TIP_AHEAD_OF_NODE),
    Mutation("a tip whose block is on no chain of the node", _tip(0, sha256(b"another chain")),
             Reason.TIP_NOT_ON_CHAIN),
    Mutation("a tip ten blocks old", _tip(-10), Reason.TIP_TOO_OLD),
]  # fmt: skip


def _sign(corpus: Corpus, signer_id: str, built: Built) -> signer_pb2.SignRoundResponse:
    manifest, psbts = built
    request = signer_pb2.SignRoundRequest(
        kind=signer_pb2.ROUND_KIND_WITHDRAWAL, manifest=manifest, psbts=psbts
    )
    answer: signer_pb2.SignRoundResponse = corpus.stub(signer_id).SignRound(
        request, timeout=CALL_TIMEOUT
    )
    return answer


def test_the_corpus_holds_at_least_sixty_mutations() -> None:
    assert len(MUTATIONS) >= 60
    assert len({m.name for m in MUTATIONS}) == len(MUTATIONS)


@pytest.mark.parametrize("signer_id", BACKENDS)
@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.name for m in MUTATIONS])
def test_a_hostile_round_is_refused_with_its_reason(
    corpus: Corpus, signer_id: str, mutation: Mutation
) -> None:
    answer = _sign(corpus, signer_id, mutation.build(corpus.honest))
    assert not answer.signed_psbts
    assert not answer.attestations  # no fee statement of a round it did not sign
    assert [r.reason_code for r in answer.refusals][:1] == [mutation.reason.value]


def test_the_honest_round_is_signed_by_both_backends(corpus: Corpus) -> None:
    """Last: the corpus's coins are then in the signers' logs (run after the mutations)."""
    for signer_id in BACKENDS:
        answer = _sign(corpus, signer_id, _honest(corpus.honest))
        assert [r.reason_code for r in answer.refusals] == []
        assert answer.signed_psbts
        assert len(answer.attestations) == len(answer.signed_psbts)  # both backends attest
