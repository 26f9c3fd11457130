"""A signer's SignRound work in process, against bare libsecp256k1 and against bdkpython.

The round: 500 inputs of a 2-of-3 P2WSH series, 100 withdrawals. The signer is the real
``signer.rounds.RoundSigner`` (policy, chain checks, emulator backend, verification of its own
signatures, signing log, audit log) with a stand-in chain view that answers from a dict: what
this row measures is the signer's own work, not its node's I/O.
"""

from __future__ import annotations

import base64
import tempfile
from dataclasses import dataclass
from pathlib import Path

import coincurve

from bench.common import Comparison, Row, compare, ms, row, timed
from pool.hashes import sha256
from pool.manifest import Manifest, Utxo, encode_manifest
from pool.networks import REGTEST
from pool.psbt import Psbt
from pool.roles import input_sighash, sign_psbt
from pool.series import CHANGE, RECEIVE, Series
from pool.sighash import SegwitV0Sighasher
from pool.tx import OutPoint, Transaction, TxIn, TxOut
from pool.vocabulary import RoundKind
from pool.withdrawal import build_round
from signer.audit import AuditLog
from signer.backends.emulator import EmulatorBackend
from signer.chain import ChainUtxo
from signer.chain_checks import ChainRules
from signer.policy import PolicyConfig, series_checksum
from signer.rounds import RoundSigner
from signer.state import SignerState
from tests.factories import BTC, TIP_HASH, make_series, manifest, master_key, request

INPUTS = 500
OUTPUTS_PER_FUNDING = 100
UTXO_VALUE = BTC // 100
SIGNER_KEY = 1
SERIES = make_series(1, 2, [0, 1, 2])
TIP_HEIGHT = 1000


@dataclass(frozen=True)
class Round:
    manifest: Manifest
    manifest_bytes: bytes
    psbts: tuple[Psbt, ...]
    psbt_bytes: tuple[bytes, ...]
    funding: dict[str, bytes]
    """Previous transactions by display txid."""
    inputs: int


def _funding(series: Series, first: int, count: int) -> Transaction:
    outputs = tuple(
        TxOut(UTXO_VALUE, series.derive(RECEIVE, first + i).script_pubkey) for i in range(count)
    )
    source = TxIn(OutPoint(sha256(f"bench funding {first}".encode()), 0), 0xFFFFFFFF)
    return Transaction(2, (source,), outputs, 0)


def make_round(inputs: int = INPUTS) -> Round:
    """``inputs`` UTXOs of 0.01 BTC, spent whole by 100 withdrawals."""
    utxos: list[Utxo] = []
    funding: dict[str, bytes] = {}
    for first in range(0, inputs, OUTPUTS_PER_FUNDING):
        tx = _funding(SERIES, first, min(OUTPUTS_PER_FUNDING, inputs - first))
        funding[tx.txid_hex] = tx.serialize()
        utxos += [
            Utxo(OutPoint(tx.txid, vout), UTXO_VALUE, SERIES.id, RECEIVE, first + vout, 900)
            for vout in range(len(tx.outputs))
        ]
    fee_reserve = inputs * 250  # at 2 sat/vB, more than each 2-of-3 input's share of the fee
    amount = (inputs * UTXO_VALUE - fee_reserve) // 100
    m = manifest(
        [SERIES],
        utxos,
        [request(f"client{n % 7}", f"w{n}", amount) for n in range(100)],
        tip_height=TIP_HEIGHT,
    )
    plan = build_round(m)
    psbts = tuple(t.psbt for t in plan.transactions)
    spent = sum(len(p.inputs) for p in psbts)
    assert spent == inputs, f"the round spends {spent} inputs, not {inputs}"
    return Round(m, encode_manifest(m), psbts, tuple(p.serialize() for p in psbts), funding, spent)


class DictChain:
    """A ``ChainView`` answering from dicts: the pinned tip and the funding transactions."""

    def __init__(self, r: Round) -> None:
        self._utxos: dict[OutPoint, ChainUtxo] = {}
        for txid_hex, raw in r.funding.items():
            tx = Transaction.parse(raw)
            for vout, out in enumerate(tx.outputs):
                confirmations = TIP_HEIGHT - 900 + 1
                self._utxos[OutPoint(tx.txid, vout)] = ChainUtxo(
                    out.value, out.script_pubkey, 900, confirmations
                )
            assert tx.txid_hex == txid_hex
        self._raw = r.funding

    def tip(self) -> tuple[int, str]:
        return TIP_HEIGHT, TIP_HASH.hex()

    def block_hash(self, height: int) -> str | None:
        return TIP_HASH.hex() if height == TIP_HEIGHT else sha256(str(height).encode()).hex()

    def utxo(self, outpoint: OutPoint) -> ChainUtxo | None:
        return self._utxos.get(outpoint)

    def raw_transaction(self, txid_hex: str) -> bytes | None:
        return self._raw.get(txid_hex)


def _policy() -> PolicyConfig:
    return PolicyConfig(
        approved_series=frozenset({series_checksum(SERIES, REGTEST)}),
        max_round_amount=100 * BTC,
        max_daily_amount=1000 * BTC,
    )


def new_signer(directory: Path, r: Round) -> RoundSigner:
    """A signer with a fresh signing log and audit log, the series registered."""
    state = SignerState(directory / "state")
    receive, change = (SERIES.descriptor(b).to_string(REGTEST) for b in (RECEIVE, CHANGE))
    state.register_series(SERIES.id, REGTEST.name, receive, change, 0.0)
    return RoundSigner(
        "signer-1",
        REGTEST,
        _policy(),
        EmulatorBackend(master_key(SIGNER_KEY), REGTEST),
        state,
        AuditLog(directory / "audit.log"),
        lambda: 1_700_000_000.0,
        DictChain(r),
        ChainRules(),
    )


def sign_round_seconds(r: Round) -> float:
    """One SignRound's work on a fresh signer (its set-up is not timed)."""
    with tempfile.TemporaryDirectory(prefix="vpool-bench-") as tmp:
        signer = new_signer(Path(tmp), r)
        holder: list[object] = []
        seconds = timed(
            lambda: holder.append(
                signer.sign_round(RoundKind.WITHDRAWAL, r.manifest_bytes, r.psbt_bytes)
            )
        )
        result = holder[0]
        refusals = getattr(result, "refusals", None)
        assert not refusals, f"the bench round was refused: {refusals}"
        return seconds


def bare_signatures_seconds(r: Round) -> float:
    """libsecp256k1 through coincurve: one signature per input with a fixed key and digest."""
    key = coincurve.PrivateKey(sha256(b"bench key"))
    sighasher = SegwitV0Sighasher(r.psbts[0].tx)
    digest = input_sighash(r.psbts[0], 0, sighasher)

    def run() -> None:
        for _ in range(r.inputs):
            key.sign(digest, hasher=None)

    return timed(run)


def against_bare(r: Round, repetitions: int) -> tuple[Row, Comparison]:
    comparison = compare(
        lambda: sign_round_seconds(r), lambda: bare_signatures_seconds(r), repetitions
    )
    return (
        row(
            f"SignRound work, {r.inputs}-input 2-of-3 round, in process ÷ {r.inputs} bare "
            "libsecp256k1 signatures",
            comparison.ratio,
            "×",
            "<= 6",
            f"SignRound {ms(comparison.median_a)} (policy rebuild, chain checks against a "
            f"stand-in chain view answering from a dict, so no node I/O; the coins come from "
            f"funding transactions of {OUTPUTS_PER_FUNDING} outputs each; emulator backend, "
            f"verification, signing and audit logs); coincurve {ms(comparison.median_b)}; "
            f"{comparison.spread()}",
        ),
        comparison,
    )


def _bdk_descriptor(branch: int) -> str:
    """The series' descriptor with this signer's account key as a tprv (what bdk signs with)."""
    master = master_key(SIGNER_KEY)
    keys = []
    for key in SERIES.keys:
        text = key.to_string(REGTEST)
        if key.origin.fingerprint == master.fingerprint:
            account = master.derive_path(key.origin.path)
            text = f"[{key.origin.to_string()}]{account.to_string(REGTEST)}"
        keys.append(f"{text}/{branch}/*")
    return f"wsh(sortedmulti({SERIES.m},{','.join(keys)}))"


class BdkSigner:
    """bdkpython's descriptor wallet holding the same key, signing the round's PSBTs."""

    def __init__(self) -> None:
        import bdkpython as bdk

        self._bdk = bdk
        self.version = getattr(bdk, "__version__", "") or _dist_version("bdkpython")
        self._wallet = bdk.Wallet(
            bdk.Descriptor(_bdk_descriptor(RECEIVE), bdk.NetworkKind.TEST),
            bdk.Descriptor(_bdk_descriptor(CHANGE), bdk.NetworkKind.TEST),
            bdk.Network.REGTEST,
            bdk.Persister.new_in_memory(),
        )
        # The PSBT carries each input's witness UTXO (what BIP143 signs); no finalizing.
        self._options = bdk.SignOptions(
            trust_witness_utxo=True,
            assume_height=None,
            allow_all_sighashes=False,
            try_finalize=False,
            sign_with_tap_internal_key=False,
            allow_grinding=False,
        )

    def sign(self, psbts: tuple[bytes, ...]) -> list[bytes]:
        signed = []
        for raw in psbts:
            psbt = self._bdk.Psbt(base64.b64encode(raw).decode())
            self._wallet.sign(psbt, self._options)
            signed.append(base64.b64decode(psbt.serialize()))
        return signed


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def against_bdk(r: Round, repetitions: int) -> Row:
    bdk = BdkSigner()
    master = master_key(SIGNER_KEY)
    ours = [
        sign_psbt(p, master.fingerprint, lambda path: master.derive_path(path).private_key)
        for p in r.psbts
    ]
    theirs = [Psbt.parse(raw) for raw in bdk.sign(r.psbt_bytes)]
    assert [[i.partial_sigs for i in p.inputs] for p in theirs] == [
        [i.partial_sigs for i in p.inputs] for p in ours
    ], "bdk made other signatures"
    comparison = compare(
        lambda: sign_round_seconds(r), lambda: timed(lambda: bdk.sign(r.psbt_bytes)), repetitions
    )
    return row(
        f"SignRound work, {r.inputs}-input 2-of-3 round, in process ÷ bdkpython signing the same "
        "PSBT",
        comparison.ratio,
        "×",
        "<= 1.5",
        f"SignRound {ms(comparison.median_a)} (as above: stand-in chain view from a dict); "
        f"bdkpython {bdk.version} {ms(comparison.median_b)} (a descriptor wallet with the same "
        f"tprv, sign with trust_witness_utxo, no finalizing; bdk checks no policy, keeps no log; "
        f"same signatures checked); {comparison.spread()}",
    )


def database_bytes_added(r: Round) -> int:
    """How much one signed round adds to a fresh signer's database (closed, so checkpointed)."""
    with tempfile.TemporaryDirectory(prefix="vpool-bench-db-") as tmp:
        signer = new_signer(Path(tmp), r)
        state = signer._state
        state.close()
        before = state.path.stat().st_size
        signer = new_signer(Path(tmp), r)
        result = signer.sign_round(RoundKind.WITHDRAWAL, r.manifest_bytes, r.psbt_bytes)
        assert not getattr(result, "refusals", None), "the bench round was refused"
        signer.close()
        signer._state.close()
        return signer._state.path.stat().st_size - before


def database_growth(small: int, large: int) -> Row:
    """A signer's database growth per signed input, for a small and a large round."""
    rounds = (make_round(small), make_round(large))
    added = [database_bytes_added(r) for r in rounds]
    per_input = [a / r.inputs for a, r in zip(added, rounds, strict=True)]
    factor = large / small
    return row(
        f"a signer's database growth, {small} → {large}-input round",
        added[1] / added[0],
        f"× per {factor:g}×",
        f"<= {factor * 1.1:g}",
        f"{added[0] / 1000:.0f} kB → {added[1] / 1000:.0f} kB added by one signed round "
        f"({per_input[0]:.0f} → {per_input[1]:.0f} bytes per input: a signing-log row per "
        f"input, each transaction stored once, the kept answer, the spend); linear is "
        f"{factor:g}×; SQLite page granularity, so one measurement each",
    )
