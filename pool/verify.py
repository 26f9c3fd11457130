"""Rebuild and compare: are these PSBTs exactly what this manifest builds?

The one check every signer makes before anything else about a round, as a pure function, so
that a signer's policy holds only its operator's rules, and anyone (an auditor, a client, an
operator with ``vpool verify-round``) can check a round offline from its manifest and PSBTs.

``compare_with_rebuild`` names each difference with the reason a signer refuses it for
(``pool.vocabulary.Reason``); ``verify_round`` decodes a manifest of either kind (withdrawal or
refund), rebuilds it and compares.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pool.errors import VpoolError
from pool.manifest import MAGIC as WITHDRAWAL_MAGIC
from pool.manifest import decode_manifest
from pool.psbt import Psbt, PsbtInput
from pool.refunds import build_refunds, decode_refund_manifest
from pool.series import Series
from pool.sighash import SIGHASH_ALL
from pool.vocabulary import Reason, RoundKind
from pool.withdrawal import build_round


@dataclass(frozen=True)
class Difference:
    """One way the PSBTs differ from the rebuild."""

    reason: Reason
    message: str
    psbt_index: int | None = None
    """None: the round as a whole (the PSBT count)."""
    input_index: int | None = None


@dataclass(frozen=True)
class Verdict:
    """What ``verify_round`` found."""

    kind: RoundKind | None
    """None when the manifest does not decode."""
    manifest_hash: bytes
    txids: tuple[str, ...]
    """The transactions the manifest builds, in order."""
    fees: tuple[int, ...]
    differences: tuple[Difference, ...]

    @property
    def matches(self) -> bool:
        return not self.differences


def compare_with_rebuild(
    got: Sequence[Psbt],
    wanted: Sequence[Psbt],
    change_vouts: Sequence[int | None],
    registered: Mapping[int, Series],
    received: Sequence[bytes] | None = None,
) -> list[Difference]:
    """Every difference between the PSBTs received and the ones the manifest builds (``wanted``,
    with each one's change output), the first of each reason per PSBT; empty when they are the
    same bytes. ``registered`` are the series an input may come from (to tell a foreign input
    from one the manifest did not select). ``received``: the bytes ``got`` were parsed from,
    compared as they came (else ``got`` is serialized again): then a PSBT whose fields match but
    whose encoding is not the canonical one (entries out of order) differs too."""
    if len(got) != len(wanted):
        message = f"{len(got)} PSBTs sent, the manifest builds {len(wanted)}"
        return [Difference(Reason.PSBT_COUNT_MISMATCH, message)]
    if received is not None and len(received) != len(got):
        raise ValueError(f"{len(received)} received PSBTs for {len(got)} parsed")
    found: list[Difference] = []
    for i, (g, w, change_vout) in enumerate(zip(got, wanted, change_vouts, strict=True)):
        sent = g.serialize() if received is None else received[i]
        if sent == w.serialize():
            continue
        diffs = _differences(g, w, change_vout, registered) or [
            (Reason.PSBT_MISMATCH, "PSBT fields differ from the manifest's", None)
        ]
        seen: set[Reason] = set()
        for reason, message, input_index in diffs:
            if reason not in seen:
                seen.add(reason)
                found.append(Difference(reason, f"PSBT {i}: {message}", i, input_index))
    return found


def verify_round(manifest: bytes, psbts: Sequence[bytes]) -> Verdict:
    """Decode ``manifest`` (withdrawal or refund, by its magic), rebuild its transactions and
    compare them with ``psbts``; inputs may come from the manifest's own series."""
    try:
        if manifest[:4] == WITHDRAWAL_MAGIC:
            m = decode_manifest(manifest)
            plan = build_round(m)
            kind, series = RoundKind.WITHDRAWAL, m.series
            manifest_hash = plan.manifest_hash
            built = [
                (t.psbt, t.txid_hex, t.fee, None if t.change is None else t.change.vout)
                for t in plan.transactions
            ]
        else:
            r = decode_refund_manifest(manifest)
            refunds = build_refunds(r)
            kind, series, manifest_hash = RoundKind.REFUND, r.series, refunds.manifest_hash
            built = [(t.psbt, t.txid_hex, t.fee, None) for t in refunds.transactions]
    except VpoolError as exc:
        failed = Difference(Reason.MALFORMED_MANIFEST, f"manifest does not decode: {exc}")
        return Verdict(None, b"", (), (), (failed,))
    parsed: list[Psbt] = []
    for i, raw in enumerate(psbts):
        try:
            parsed.append(Psbt.parse(raw))
        except VpoolError as exc:
            failed = Difference(Reason.MALFORMED_PSBT, f"PSBT {i} does not parse: {exc}", i)
            return Verdict(kind, manifest_hash, (), (), (failed,))
    differences = compare_with_rebuild(
        parsed, [b[0] for b in built], [b[3] for b in built], {s.id: s for s in series}, psbts
    )
    return Verdict(
        kind,
        manifest_hash,
        tuple(b[1] for b in built),
        tuple(b[2] for b in built),
        tuple(differences),
    )


_Difference = tuple[Reason, str, int | None]


def _differences(
    got: Psbt, want: Psbt, change_vout: int | None, registered: Mapping[int, Series]
) -> list[_Difference]:
    selected = {i.prevout for i in want.tx.inputs}
    foreign: list[_Difference] = [
        (Reason.INPUT_NOT_IN_POOL, f"input {j} is not a pool output", j)
        for j, (txin, inp) in enumerate(zip(got.tx.inputs, got.inputs, strict=True))
        if txin.prevout not in selected and not _is_pool_input(inp, registered)
    ]
    if foreign:
        return foreign
    if selected.isdisjoint(i.prevout for i in got.tx.inputs):
        return [(Reason.MANIFEST_MISMATCH, "spends none of the inputs the manifest selects", None)]
    diffs = _input_differences(got, want)
    g, w = got.tx, want.tx
    if (g.version, g.locktime) != (w.version, w.locktime) or any(
        (a.sequence, a.script_sig) != (b.sequence, b.script_sig)
        for a, b in zip(g.inputs, w.inputs, strict=False)
    ):
        diffs.append((Reason.TX_FIELDS_MISMATCH, "version, locktime or sequences differ", None))
    diffs += _output_differences(got, want, change_vout)
    if got.xpubs != want.xpubs:
        diffs.append((Reason.DERIVATION_MISMATCH, "global xpubs differ", None))
    return diffs


def _input_differences(got: Psbt, want: Psbt) -> list[_Difference]:
    diffs: list[_Difference] = []
    for j, inp in enumerate(got.inputs):
        if inp.sighash_type not in (None, SIGHASH_ALL):
            diffs.append(
                (Reason.SIGHASH_NOT_ALL, f"input {j} asks for sighash {inp.sighash_type:#x}", j)
            )
    wanted = want.tx.inputs
    for j, txin in enumerate(got.tx.inputs):
        g = got.inputs[j]
        if j >= len(wanted) or txin.prevout != wanted[j].prevout:
            if j >= len(wanted):
                diffs.append((Reason.EXTRA_INPUT, f"input {j} is not in the manifest's round", j))
            else:
                diffs.append((Reason.UNKNOWN_INPUT, f"input {j} is not the one selected", j))
            continue
        w = want.inputs[j]
        if g.witness_utxo != w.witness_utxo:
            diffs.append((Reason.INPUT_UTXO_MISMATCH, f"input {j} amount or script differs", j))
        if g.witness_script != w.witness_script:
            diffs.append((Reason.WITNESS_SCRIPT_MISMATCH, f"input {j} witness script differs", j))
        if g.bip32_derivations != w.bip32_derivations:
            diffs.append((Reason.DERIVATION_MISMATCH, f"input {j} key derivations differ", j))
        if (g.partial_sigs, g.unknown, g.final_script_witness) != (
            w.partial_sigs,
            w.unknown,
            w.final_script_witness,
        ):
            diffs.append((Reason.PSBT_MISMATCH, f"input {j} carries unexpected fields", j))
    if len(got.tx.inputs) < len(wanted):
        diffs.append((Reason.MISSING_INPUT, "an input the manifest selects is missing", None))
    return diffs


def _is_pool_input(inp: PsbtInput, registered: Mapping[int, Series]) -> bool:
    """Does the input's UTXO pay a pool script at the path its derivations claim?

    A pool input's derivations name one (branch, index) of each series holding its keys, so an
    input claiming more places than there are registered series is not one; each place claimed
    is derived once.
    """
    if inp.witness_utxo is None:
        return False
    accounts: dict[tuple[bytes, tuple[int, ...]], list[Series]] = {}
    for series in registered.values():
        for key in series.keys:
            accounts.setdefault((key.origin.fingerprint, key.origin.path), []).append(series)
    claimed: set[tuple[int, int, int]] = set()
    for origin in inp.bip32_derivations.values():
        path = origin.path
        if len(path) < 2 or path[-2] not in (0, 1) or path[-1] >= 2**31:
            continue
        for series in accounts.get((origin.fingerprint, path[:-2]), ()):
            claimed.add((series.id, path[-2], path[-1]))
    if len(claimed) > len(registered):
        return False
    script = inp.witness_utxo.script_pubkey
    by_id = {series.id: series for series in registered.values()}
    return any(by_id[i].derive(b, n).script_pubkey == script for i, b, n in sorted(claimed))


def _output_differences(got: Psbt, want: Psbt, change_vout: int | None) -> list[_Difference]:
    g, w = got.tx.outputs, want.tx.outputs
    if len(g) > len(w):
        return [
            (Reason.EXTRA_OUTPUT, f"{len(g) - len(w)} output(s) the manifest does not pay", None)
        ]
    if len(g) < len(w):
        return [(Reason.MISSING_OUTPUT, "an output the manifest pays is missing", None)]
    diffs: list[_Difference] = []
    for k, (go, wo) in enumerate(zip(g, w, strict=True)):
        if go.script_pubkey != wo.script_pubkey:
            if k == change_vout:
                diffs.append(
                    (Reason.CHANGE_NOT_TO_POOL, f"change output {k} leaves the pool", None)
                )
            else:
                diffs.append(
                    (Reason.DESTINATION_MISMATCH, f"output {k} pays another address", None)
                )
        if go.value != wo.value:
            diffs.append(
                (Reason.AMOUNT_MISMATCH, f"output {k} pays {go.value}, not {wo.value}", None)
            )
        gp, wp = got.outputs[k], want.outputs[k]
        if gp.witness_script != wp.witness_script:
            diffs.append(
                (Reason.WITNESS_SCRIPT_MISMATCH, f"output {k} witness script differs", None)
            )
        if gp.bip32_derivations != wp.bip32_derivations:
            diffs.append((Reason.DERIVATION_MISMATCH, f"output {k} key derivations differ", None))
    return diffs
