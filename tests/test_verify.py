"""Rebuild and compare as a pure function (``pool.verify``), and ``vpool verify-round`` over it:
the check every signer makes first, which anyone can make offline."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from pathlib import Path

import pytest

from pool.manifest import Manifest, encode_manifest
from pool.psbt import MAGIC, Psbt, _write_map
from pool.refunds import build_refunds, encode_refund_manifest
from pool.serialize import var_bytes
from pool.verify import verify_round
from pool.vocabulary import Reason, RoundKind
from pool.withdrawal import build_round
from tests.factories import BTC, make_series, manifest, p2wpkh, request, utxo
from tests.refund_factories import deposit, refund_manifest
from vpool import cli

S1 = make_series(1, 2, (0, 1, 2))


def honest() -> Manifest:
    return manifest(
        [S1],
        [utxo(i, BTC, 100 + i, index=i) for i in range(3)],
        [request("alice", "1", 120_000_000), request("bob", "1", 20_000_000)],
    )


def psbts_of(m: Manifest) -> list[bytes]:
    return [t.psbt.serialize() for t in build_round(m).transactions]


def test_an_honest_withdrawal_round_matches_with_its_txids_and_fees() -> None:
    plan = build_round(honest())
    verdict = verify_round(encode_manifest(honest()), psbts_of(honest()))
    assert verdict.matches and verdict.kind is RoundKind.WITHDRAWAL
    assert verdict.manifest_hash == plan.manifest_hash
    assert verdict.txids == tuple(t.txid_hex for t in plan.transactions)
    assert verdict.fees == tuple(t.fee for t in plan.transactions)


def test_an_honest_refund_round_matches() -> None:
    m = refund_manifest([S1], [deposit("carol", S1, 3, BTC)])
    psbts = [t.psbt.serialize() for t in build_refunds(m).transactions]
    verdict = verify_round(encode_refund_manifest(m), psbts)
    assert verdict.matches and verdict.kind is RoundKind.REFUND


def test_a_changed_payment_is_named_with_the_reason_a_signer_refuses_it_for() -> None:
    psbt = build_round(honest()).transactions[0].psbt
    outputs = list(psbt.tx.outputs)
    outputs[0] = replace(outputs[0], script_pubkey=p2wpkh("thief"))
    stolen = replace(psbt, tx=replace(psbt.tx, outputs=tuple(outputs)))
    verdict = verify_round(encode_manifest(honest()), [stolen.serialize()])
    assert [(d.reason, d.psbt_index) for d in verdict.differences] == [
        (Reason.DESTINATION_MISMATCH, 0)
    ]


def test_psbts_of_another_manifest_do_not_match() -> None:
    other = replace(honest(), requests=honest().requests[:1])
    verdict = verify_round(encode_manifest(honest()), psbts_of(other))
    assert not verdict.matches


def test_a_missing_psbt_is_a_count_mismatch() -> None:
    verdict = verify_round(encode_manifest(honest()), [])
    assert [d.reason for d in verdict.differences] == [Reason.PSBT_COUNT_MISMATCH]


def test_a_manifest_that_does_not_decode_is_named() -> None:
    verdict = verify_round(encode_manifest(honest())[:-2], psbts_of(honest()))
    assert verdict.kind is None
    assert [d.reason for d in verdict.differences] == [Reason.MALFORMED_MANIFEST]


def test_a_psbt_that_does_not_parse_is_named() -> None:
    verdict = verify_round(encode_manifest(honest()), [b"psbt\xff\x00"])
    assert [(d.reason, d.psbt_index) for d in verdict.differences] == [(Reason.MALFORMED_PSBT, 0)]


# --------------------------------------------------------------------------- vpool verify-round


def round_json(m: Manifest, psbts: list[bytes]) -> str:
    """What ``vpool admin round`` prints (bytes in base64, as protobuf's JSON has them)."""
    return json.dumps(
        {
            "manifest": base64.b64encode(encode_manifest(m)).decode(),
            "transactions": [{"psbt": base64.b64encode(p).decode()} for p in psbts],
        }
    )


def test_verify_round_accepts_the_json_of_admin_round(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "round.json").write_text(round_json(honest(), psbts_of(honest())))
    assert cli.main(["verify-round", "--round", str(tmp_path / "round.json")]) == 0
    assert "exactly what the manifest builds" in capsys.readouterr().out


def test_verify_round_exits_1_and_names_each_difference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "manifest.bin").write_bytes(encode_manifest(honest()))
    other = psbts_of(replace(honest(), fee_rate=5_000))
    (tmp_path / "0.psbt").write_text(base64.b64encode(other[0]).decode())
    args = ["verify-round", "--manifest", str(tmp_path / "manifest.bin")]
    assert cli.main([*args, "--psbt", str(tmp_path / "0.psbt"), "--json"]) == 1
    verdict = json.loads(capsys.readouterr().out)
    assert not verdict["matches"]
    assert {d["reason"] for d in verdict["differences"]} == {"AMOUNT_MISMATCH"}


def test_verify_round_says_what_is_wrong_with_its_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "round.json").write_text("{}")
    assert cli.main(["verify-round", "--round", str(tmp_path / "round.json")]) == 2
    assert "not the JSON of `vpool admin round`" in capsys.readouterr().err


def test_a_psbt_encoded_out_of_canonical_order_does_not_match() -> None:
    psbt = build_round(honest()).transactions[0].psbt
    canonical = psbt.serialize()
    reordered = MAGIC + b"".join(
        var_bytes(key) + var_bytes(value)
        for key, value in sorted(psbt._global_entries(), reverse=True)
    )
    reordered += b"\0" + canonical[len(MAGIC) + len(_write_map(psbt._global_entries())) :]
    assert Psbt.parse(reordered) == psbt and reordered != canonical
    verdict = verify_round(encode_manifest(honest()), [reordered])
    assert [(d.reason, d.psbt_index) for d in verdict.differences] == [(Reason.PSBT_MISMATCH, 0)]
