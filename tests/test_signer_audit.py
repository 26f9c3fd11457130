"""The hash-chained audit log and `vpool-signer audit verify`."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from pool.address import script_pubkey_to_address
from pool.networks import REGTEST
from pool.psbt import Psbt, PsbtInput
from pool.vocabulary import Reason, RoundKind
from pool.withdrawal import PlannedTransaction, build_round
from signer.audit import (
    AUDIT_FILE,
    GENESIS,
    Anchor,
    AuditEntry,
    AuditError,
    AuditLog,
    Decision,
    VerifyResult,
    describe_psbts,
    entry_hash,
    verify,
    verify_against,
)
from signer.cli import main
from tests.factories import BTC, make_series, manifest, request, utxo

MANIFEST = b"manifest bytes"
PSBTS = (b"psbt one: secret-looking bytes", b"psbt two")
NOW = 1_700_000_000.25


def append(
    log: AuditLog,
    decision: Decision = Decision.SIGNED,
    now: float = NOW,
    kind: RoundKind = RoundKind.WITHDRAWAL,
) -> AuditEntry:
    reasons = () if decision is Decision.SIGNED else (Reason.FEE_ABOVE_LIMIT,)
    return log.append(
        kind=kind,
        manifest=MANIFEST,
        psbts=PSBTS,
        decision=decision,
        reasons=reasons,
        policy_hash="ab" * 32,
        signer_id="73c5da0a",
        now=now,
    )


def write_log(path: Path, n: int) -> list[AuditEntry]:
    decisions = [Decision.SIGNED, Decision.REFUSED, Decision.FAILED]
    with AuditLog(path) as log:
        return [append(log, decisions[i % 3], NOW + i) for i in range(n)]


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def rewrite(path: Path, new_lines: list[bytes]) -> None:
    path.write_bytes(b"".join(new_lines))


def reseal(doc: dict[str, object]) -> bytes:
    """An entry whose own hash was recomputed after a change, as a careful forger would."""
    doc["hash"] = entry_hash(doc)
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def fail_fsync(fd: int) -> None:
    raise OSError("disk full")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / AUDIT_FILE


# --------------------------------------------------------------------------- appending


def test_appended_entries_verify(path: Path) -> None:
    entries = write_log(path, 3)
    assert verify(path) == VerifyResult(True, 3, None, "", entries[-1].hash)


def test_an_empty_log_verifies_with_the_genesis_head(path: Path) -> None:
    AuditLog(path).close()
    assert verify(path) == VerifyResult(True, 0, None, "", GENESIS)


def test_the_first_entry_links_to_genesis_and_each_next_to_the_previous(path: Path) -> None:
    first, second, third = write_log(path, 3)
    assert (first.seq, second.seq, third.seq) == (1, 2, 3)
    assert (first.prev, second.prev, third.prev) == (GENESIS, first.hash, second.hash)


def test_hash_is_sha256_of_the_canonical_json_without_hash(path: Path) -> None:
    (entry,) = write_log(path, 1)
    doc = json.loads(path.read_bytes())
    del doc["hash"]
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    assert entry.hash == hashlib.sha256(canonical).hexdigest()


def test_entry_records_hashes_decision_reasons_and_utc_time(path: Path) -> None:
    with AuditLog(path) as log:
        append(log, Decision.REFUSED)
    doc = json.loads(path.read_bytes())
    assert doc["manifest_hash"] == hashlib.sha256(MANIFEST).hexdigest()
    assert doc["psbt_hashes"] == [hashlib.sha256(p).hexdigest() for p in PSBTS]
    assert (doc["decision"], doc["reasons"]) == ("refused", ["FEE_ABOVE_LIMIT"])
    assert doc["time"] == "2023-11-14T22:13:20.250Z"
    assert (doc["policy_hash"], doc["signer_id"]) == ("ab" * 32, "73c5da0a")


def test_entry_records_the_kind_of_the_round(path: Path) -> None:
    with AuditLog(path) as log:
        append(log, kind=RoundKind.REFUND)
        append(log)
    kinds = [json.loads(line)["kind"] for line in lines(path)]
    assert kinds == ["refund", "withdrawal"]
    assert verify(path).ok


def test_entries_written_before_kinds_existed_still_verify_and_continue(path: Path) -> None:
    legacy, head = [], GENESIS
    for seq in (1, 2):
        doc: dict[str, object] = {
            "seq": seq,
            "time": "2023-11-14T22:13:20.250Z",
            "manifest_hash": "00" * 32,
            "psbt_hashes": [],
            "decision": "signed",
            "reasons": [],
            "policy_hash": "ab" * 32,
            "signer_id": "73c5da0a",
            "prev": head,
        }
        legacy.append(reseal(doc))
        head = str(doc["hash"])
    rewrite(path, legacy)
    assert verify(path) == VerifyResult(True, 2, None, "", head)
    with AuditLog(path) as log:
        entry = append(log, kind=RoundKind.REFUND)
    assert (entry.seq, entry.prev) == (3, head)
    assert verify(path).ok


def test_entries_never_contain_the_psbts_or_the_manifest(path: Path) -> None:
    write_log(path, 2)
    text = path.read_bytes()
    for secret in (MANIFEST, *PSBTS):
        assert secret not in text
        assert secret.hex().encode() not in text


def test_the_chain_continues_after_reopening(path: Path) -> None:
    before = write_log(path, 2)
    with AuditLog(path) as log:
        assert log.head == before[-1].hash
        after = append(log)
    assert (after.seq, after.prev) == (3, before[-1].hash)
    assert verify(path).ok


def test_opening_a_log_with_a_damaged_last_line_is_refused(path: Path) -> None:
    write_log(path, 2)
    rewrite(path, [*lines(path)[:-1], lines(path)[-1][:40]])
    with pytest.raises(AuditError, match="last entry is damaged"):
        AuditLog(path)


def test_a_failed_write_leaves_the_log_as_it_was(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with AuditLog(path) as log:
        first = append(log)
        with monkeypatch.context() as patched:
            patched.setattr(os, "fsync", fail_fsync)
            with pytest.raises(OSError, match="disk full"):
                append(log)
        second = append(log)
    assert (second.seq, second.prev) == (2, first.hash)
    assert verify(path) == VerifyResult(True, 2, None, "", second.hash)


# --------------------------------------------------------------------------- tampering


def test_a_modified_entry_is_detected(path: Path) -> None:
    write_log(path, 3)
    tampered = lines(path)
    tampered[1] = tampered[1].replace(b'"refused"', b'"signed"')
    rewrite(path, tampered)
    result = verify(path)
    assert (result.ok, result.first_bad_seq, result.entries) == (False, 2, 1)
    assert "modified" in result.message


def test_a_modified_entry_with_a_recomputed_hash_breaks_the_next_link(path: Path) -> None:
    write_log(path, 3)
    tampered = lines(path)
    doc = json.loads(tampered[1])
    doc["decision"] = "signed"
    tampered[1] = reseal(doc)
    rewrite(path, tampered)
    result = verify(path)
    assert (result.ok, result.first_bad_seq) == (False, 3)
    assert "prev is not the hash" in result.message


def test_a_deleted_entry_is_detected(path: Path) -> None:
    write_log(path, 3)
    rewrite(path, [lines(path)[0], lines(path)[2]])
    result = verify(path)
    assert (result.ok, result.first_bad_seq) == (False, 2)
    assert "seq 3 where 2 was expected" in result.message


def test_a_deleted_first_entry_is_detected(path: Path) -> None:
    write_log(path, 2)
    rewrite(path, lines(path)[1:])
    assert (verify(path).ok, verify(path).first_bad_seq) == (False, 1)


def test_a_renumbered_chain_after_a_deletion_is_detected(path: Path) -> None:
    write_log(path, 3)
    doc = json.loads(lines(path)[2])
    doc["seq"] = 2
    rewrite(path, [lines(path)[0], reseal(doc)])
    result = verify(path)
    assert (result.ok, result.first_bad_seq) == (False, 2)
    assert "prev is not the hash" in result.message


def test_reordered_entries_are_detected(path: Path) -> None:
    write_log(path, 3)
    first, second, third = lines(path)
    rewrite(path, [first, third, second])
    result = verify(path)
    assert (result.ok, result.first_bad_seq) == (False, 2)
    assert "reordered" in result.message


def test_a_truncated_last_line_is_detected(path: Path) -> None:
    write_log(path, 3)
    rewrite(path, [*lines(path)[:2], lines(path)[2][:-1]])
    result = verify(path)
    assert (result.ok, result.first_bad_seq, result.entries) == (False, 3, 2)
    assert "incomplete" in result.message


def test_a_garbled_last_line_is_detected(path: Path) -> None:
    write_log(path, 3)
    rewrite(path, [*lines(path)[:2], b'{"seq":3,"ti\x00me"\n'])
    result = verify(path)
    assert (result.ok, result.first_bad_seq) == (False, 3)
    assert "not valid JSON" in result.message


def test_a_line_that_is_not_an_entry_is_detected(path: Path) -> None:
    write_log(path, 1)
    rewrite(path, [*lines(path), b'{"seq":2}\n'])
    result = verify(path)
    assert (result.ok, result.first_bad_seq) == (False, 2)
    assert "wrong fields" in result.message


def test_a_reformatted_entry_is_detected(path: Path) -> None:
    write_log(path, 2)
    tampered = lines(path)
    tampered[0] = json.dumps(json.loads(tampered[0]), indent=None).encode() + b"\n"
    rewrite(path, tampered)
    result = verify(path)
    assert (result.ok, result.first_bad_seq) == (False, 1)
    assert "canonical" in result.message


# --------------------------------------------------------------------------- CLI


def test_cli_verify_of_an_intact_log_prints_ok_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entries = write_log(tmp_path / AUDIT_FILE, 2)
    assert main(["audit", "verify", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"audit log OK: 2 entries, head {entries[-1].hash}\n"


def test_cli_verify_of_a_tampered_log_names_the_bad_entry_and_exits_1(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_log(path, 3)
    rewrite(path, [lines(path)[0], lines(path)[2]])
    assert main(["audit", "verify", "--file", str(path)]) == 1
    out = capsys.readouterr().out
    assert "entry 2" in out
    assert "seq 3 where 2 was expected" in out


def test_cli_verify_of_a_missing_log_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "verify", "--data-dir", str(tmp_path)]) == 1
    assert AUDIT_FILE in capsys.readouterr().err


# --------------------------------------------------------------------------- what was signed


def _planned() -> PlannedTransaction:
    series = make_series(1, 2, [0, 1, 2])
    m = manifest([series], [utxo(1, 2 * BTC, 900)], [request("alice", "w1", BTC // 2)])
    return build_round(m).transactions[0]


def test_an_entry_shows_each_input_output_address_amount_and_the_fee(path: Path) -> None:
    planned = _planned()
    with AuditLog(path) as log:
        log.append(
            kind=RoundKind.WITHDRAWAL,
            manifest=MANIFEST,
            psbts=[planned.psbt.serialize()],
            decision=Decision.SIGNED,
            reasons=(),
            policy_hash="ab" * 32,
            signer_id="signer-1",
            now=NOW,
            transactions=describe_psbts([planned.psbt.serialize()], REGTEST),
        )
    (tx,) = json.loads(path.read_bytes())["transactions"]
    assert tx["txid"] == planned.txid_hex
    assert tx["inputs"] == [{"outpoint": str(planned.inputs[0].outpoint), "amount": 2 * BTC}]
    paid = script_pubkey_to_address(request("alice", "w1", 1).script_pubkey, REGTEST)
    assert {"address": paid, "amount": BTC // 2} in tx["outputs"]
    assert all(o["address"].startswith("bcrt1") for o in tx["outputs"])
    assert tx["fee"] == planned.fee
    assert 2 * BTC - sum(o["amount"] for o in tx["outputs"]) == planned.fee
    assert verify(path).ok


def test_describing_the_policys_parse_equals_describing_the_received_bytes() -> None:
    raw = _planned().psbt.serialize()
    assert describe_psbts([raw], REGTEST, [Psbt.parse(raw)]) == describe_psbts([raw], REGTEST)


def test_describing_with_a_parse_per_psbt_missing_is_refused() -> None:
    raw = _planned().psbt.serialize()
    with pytest.raises(ValueError, match="1 received"):
        describe_psbts([raw], REGTEST, [])


def test_a_psbt_that_does_not_decode_is_described_as_such() -> None:
    (described,) = describe_psbts([b"not a psbt"], REGTEST)
    assert set(described) == {"error"}
    assert described["error"].startswith("not a PSBT")


def test_an_input_without_its_amount_leaves_the_fee_unknown() -> None:
    planned = _planned()
    bare = replace(planned.psbt, inputs=tuple(PsbtInput() for _ in planned.psbt.inputs))
    (described,) = describe_psbts([bare.serialize()], REGTEST)
    assert described["inputs"][0]["amount"] is None
    assert described["fee"] is None


def test_entries_written_before_transactions_were_described_still_verify(path: Path) -> None:
    doc: dict[str, object] = {
        "seq": 1,
        "time": "2023-11-14T22:13:20.250Z",
        "kind": "withdrawal",
        "manifest_hash": "00" * 32,
        "psbt_hashes": [],
        "decision": "signed",
        "reasons": [],
        "policy_hash": "ab" * 32,
        "signer_id": "73c5da0a",
        "prev": GENESIS,
    }
    rewrite(path, [reseal(doc)])
    assert verify(path).ok
    with AuditLog(path) as log:
        assert append(log).seq == 2
    assert verify(path).ok


# --------------------------------------------------------------------------- anchored heads


def test_the_log_gives_its_position_for_get_info(path: Path) -> None:
    with AuditLog(path) as log:
        assert log.position == (0, GENESIS)
        entry = append(log)
        assert log.position == (1, entry.hash)


def test_a_log_holding_the_recorded_head_verifies_against_it(path: Path) -> None:
    entries = write_log(path, 3)
    assert verify_against(path, Anchor(2, entries[1].hash)).ok
    assert verify_against(path, Anchor(0, entries[2].hash)).ok


def test_a_log_whose_tail_was_cut_fails_against_the_recorded_head(path: Path) -> None:
    entries = write_log(path, 3)
    rewrite(path, lines(path)[:2])  # the last entry deleted: the chain alone still verifies
    assert verify(path).ok
    result = verify_against(path, Anchor(3, entries[2].hash))
    assert not result.ok
    assert "its tail was cut" in result.message
    assert result.head == entries[1].hash


def test_a_head_at_another_seq_than_recorded_fails(path: Path) -> None:
    entries = write_log(path, 3)
    assert not verify_against(path, Anchor(3, entries[1].hash)).ok


def test_a_head_is_parsed_as_seq_colon_hash_or_hash() -> None:
    assert Anchor.parse(f"7:{'AB' * 32}") == Anchor(7, "ab" * 32)
    assert Anchor.parse("cd" * 32) == Anchor(0, "cd" * 32)
    for bad in ("", "xyz", f"seven:{'ab' * 32}", "ab" * 31):
        with pytest.raises(ValueError):
            Anchor.parse(bad)


def test_cli_verify_against_the_recorded_head_detects_a_truncated_tail(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entries = write_log(path, 3)
    head = f"3:{entries[2].hash}"
    assert main(["audit", "verify", "--file", str(path), "--against", head]) == 0
    assert f"it holds {head}" in capsys.readouterr().out
    rewrite(path, lines(path)[:2])
    assert main(["audit", "verify", "--file", str(path)]) == 0  # the chain alone cannot tell
    capsys.readouterr()
    assert main(["audit", "verify", "--file", str(path), "--against", head]) == 1
    assert "its tail was cut" in capsys.readouterr().out


def test_cli_verify_against_a_malformed_head_is_bad_usage(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_log(path, 1)
    assert main(["audit", "verify", "--file", str(path), "--against", "nope"]) == 2
    assert "--against" in capsys.readouterr().err
