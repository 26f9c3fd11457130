"""The signer's fee attestation key (signer.attestation_key) and the client's signer list
(vpool.fee_attestations): where the key comes from, how it is kept, and what a list must say."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from pool import ecdsa
from pool.networks import REGTEST
from signer.attestation_key import PATH, load_or_create
from signer.keystore import KeystoreError
from vpool.fee_attestations import SignerListError, parse_signer_list

KEY = ecdsa.public_key(b"\x01" * 32).hex()
OTHER = ecdsa.public_key(b"\x02" * 32).hex()


def test_the_attestation_path_is_hardened_and_no_bip_purpose_of_a_pool() -> None:
    purposes = {44, 45, 48, 49, 84, 86}
    assert all(step >= 2**31 for step in PATH) and PATH[0] - 2**31 not in purposes


def test_the_hwi_attestation_key_is_made_once_and_kept_encrypted(tmp_path: Path) -> None:
    path = tmp_path / "attestation-key.json"
    made = load_or_create(path, "pass phrase", REGTEST)
    assert load_or_create(path, "pass phrase", REGTEST) == made
    assert made.hex() not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_hwi_attestation_key_file_refuses_a_wrong_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "attestation-key.json"
    load_or_create(path, "pass phrase", REGTEST)
    with pytest.raises(KeystoreError, match="wrong passphrase"):
        load_or_create(path, "another", REGTEST)


def test_a_signer_list_names_its_threshold_and_keys() -> None:
    found = parse_signer_list({"threshold": 2, "signers": {"a": KEY, "b": OTHER}})
    assert found.threshold == 2 and found.keys == {
        "a": bytes.fromhex(KEY),
        "b": bytes.fromhex(OTHER),
    }


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"threshold": 1, "signers": {"a": KEY}, "m": 1}, "unknown key 'm'"),
        ({"threshold": 1}, "signers: a table"),
        ({"threshold": 2, "signers": {"a": KEY}}, "threshold: an integer from 1 to 1"),
        ({"threshold": 0, "signers": {"a": KEY}}, "threshold: an integer from 1 to 1"),
        ({"threshold": True, "signers": {"a": KEY}}, "threshold: an integer"),
        ({"threshold": 1, "signers": {"a": "02zz"}}, "signers.a: not a compressed public key"),
        ({"threshold": 1, "signers": {"a": "02" + "00" * 32}}, "signers.a: not a compressed"),
        ({"threshold": 1, "signers": {"a": KEY, "b": KEY}}, "signers.b: the key of another"),
    ],
)
def test_a_signer_list_with_a_mistake_is_refused_naming_the_key(
    doc: dict[str, Any], message: str
) -> None:
    with pytest.raises(SignerListError, match=message):
        parse_signer_list(doc)
