"""The encrypted keystore and the `vpool-signer keystore` commands."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from bip32 import BIP32
from mnemonic import Mnemonic

from pool.networks import REGTEST
from signer import keystore
from signer.cli import main
from signer.keystore import KeystoreError

MNEMONIC = " ".join(["abandon"] * 11 + ["about"])
FINGERPRINT = "73c5da0a"  # the well-known master fingerprint of MNEMONIC
PASSPHRASE = "correct horse battery staple"
FAST_N = 2**4  # scrypt cost for tests; the default is 2**15

# Expected values from an independent BIP32 implementation.
_ORACLE = BIP32.from_seed(Mnemonic.to_seed(MNEMONIC, ""), network="test")
TPRV: str = _ORACLE.get_xpriv()
ACCOUNT_TPUB: str = _ORACLE.get_xpub_from_path("m/48'/1'/0'/2'")
ACCOUNT_KEY = f"[{FINGERPRINT}/48h/1h/0h/2h]{ACCOUNT_TPUB}"


def create(path: Path, secret: str = MNEMONIC, kind: str = "mnemonic") -> keystore.UnlockedKey:
    return keystore.create_keystore(path, secret, kind, PASSPHRASE, "regtest", scrypt_n=FAST_N)


def test_mnemonic_keystore_unlocks_to_the_bip39_master_key(tmp_path: Path) -> None:
    create(tmp_path / "ks.json")
    unlocked = keystore.load_keystore(tmp_path / "ks.json", PASSPHRASE)
    assert unlocked.master.to_string(REGTEST) == TPRV
    assert unlocked.kind == "mnemonic"


def test_xprv_keystore_unlocks_to_the_same_master_key(tmp_path: Path) -> None:
    create(tmp_path / "ks.json", TPRV, "xprv")
    unlocked = keystore.load_keystore(tmp_path / "ks.json", PASSPHRASE)
    assert unlocked.master.to_string(REGTEST) == TPRV
    assert unlocked.kind == "xprv"


def test_account_xpub_matches_an_independent_bip32_implementation(tmp_path: Path) -> None:
    unlocked = create(tmp_path / "ks.json")
    origin, xpub = unlocked.xpub_at(keystore.bip48_account_path(REGTEST))
    assert f"[{origin.to_string()}]{xpub}" == ACCOUNT_KEY


def test_header_records_kind_network_fingerprint_and_kdf(tmp_path: Path) -> None:
    keystore.create_keystore(tmp_path / "ks.json", MNEMONIC, "mnemonic", PASSPHRASE, "regtest")
    document = json.loads((tmp_path / "ks.json").read_text())
    assert document["version"] == 1
    assert (document["kind"], document["network"]) == ("mnemonic", "regtest")
    assert document["fingerprint"] == FINGERPRINT
    assert (document["kdf"], document["kdf_params"]["n"]) == ("scrypt", 2**15)
    assert document["cipher"] == "chacha20-poly1305"


def test_two_keystores_of_one_secret_use_fresh_salt_and_nonce(tmp_path: Path) -> None:
    create(tmp_path / "a.json")
    create(tmp_path / "b.json")
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert a["kdf_params"]["salt"] != b["kdf_params"]["salt"]
    assert a["nonce"] != b["nonce"]


def test_keystore_file_is_owner_only(tmp_path: Path) -> None:
    create(tmp_path / "ks.json")
    assert stat.S_IMODE((tmp_path / "ks.json").stat().st_mode) == 0o600


def test_wrong_passphrase_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    create(tmp_path / "ks.json")
    with pytest.raises(KeystoreError) as raised:
        keystore.load_keystore(tmp_path / "ks.json", "not the passphrase")
    assert str(raised.value) == "wrong passphrase or corrupted keystore"


def test_wrong_passphrase_leaves_the_directory_unchanged(tmp_path: Path) -> None:
    create(tmp_path / "ks.json")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    with pytest.raises(KeystoreError):
        keystore.load_keystore(tmp_path / "ks.json", "not the passphrase")
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    assert after == before


def test_changed_header_field_is_refused_like_a_wrong_passphrase(tmp_path: Path) -> None:
    create(tmp_path / "ks.json")
    document = json.loads((tmp_path / "ks.json").read_text())
    document["network"] = "testnet"  # same tprv encoding: only the associated data catches it
    (tmp_path / "ks.json").write_text(json.dumps(document))
    with pytest.raises(KeystoreError, match="wrong passphrase or corrupted keystore"):
        keystore.load_keystore(tmp_path / "ks.json", PASSPHRASE)


def test_malformed_keystore_names_the_bad_field(tmp_path: Path) -> None:
    create(tmp_path / "ks.json")
    document = json.loads((tmp_path / "ks.json").read_text())
    document["kdf_params"]["n"] = 1000
    (tmp_path / "ks.json").write_text(json.dumps(document))
    with pytest.raises(KeystoreError, match="scrypt n must be a power of two"):
        keystore.load_keystore(tmp_path / "ks.json", PASSPHRASE)


def test_existing_keystore_is_not_overwritten(tmp_path: Path) -> None:
    create(tmp_path / "ks.json")
    before = (tmp_path / "ks.json").read_bytes()
    with pytest.raises(KeystoreError, match="exists"):
        create(tmp_path / "ks.json", TPRV, "xprv")
    assert (tmp_path / "ks.json").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ks.json"]


def test_overwrite_replaces_an_existing_keystore(tmp_path: Path) -> None:
    create(tmp_path / "ks.json")
    keystore.create_keystore(
        tmp_path / "ks.json", TPRV, "xprv", PASSPHRASE, "regtest", scrypt_n=FAST_N, overwrite=True
    )
    assert keystore.load_keystore(tmp_path / "ks.json", PASSPHRASE).kind == "xprv"


def test_mnemonic_with_a_bad_checksum_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="not a valid English BIP39 mnemonic"):
        create(tmp_path / "ks.json", " ".join(["abandon"] * 12))
    assert not (tmp_path / "ks.json").exists()


def test_xprv_of_another_network_is_refused(tmp_path: Path) -> None:
    mainnet_xprv = BIP32.from_seed(Mnemonic.to_seed(MNEMONIC, ""), network="main").get_xpriv()
    with pytest.raises(KeystoreError, match="not regtest"):
        create(tmp_path / "ks.json", mainnet_xprv, "xprv")


def test_non_master_xprv_is_refused(tmp_path: Path) -> None:
    account_tprv = _ORACLE.get_xpriv_from_path("m/48'/1'/0'/2'")
    with pytest.raises(KeystoreError, match="master key"):
        create(tmp_path / "ks.json", account_tprv, "xprv")


def test_empty_passphrase_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="passphrase must not be empty"):
        keystore.create_keystore(tmp_path / "ks.json", MNEMONIC, "mnemonic", "", "regtest")


@pytest.mark.parametrize(
    ("secret", "kind"),
    [
        (" ".join(["abandon"] * 12), "mnemonic"),
        (TPRV[:-1] + ("1" if TPRV[-1] != "1" else "2"), "xprv"),
        (TPRV, "mnemonic"),
    ],
    ids=["bad-mnemonic-checksum", "bad-xprv-checksum", "xprv-given-as-mnemonic"],
)
def test_refused_secret_is_not_echoed_in_the_error(tmp_path: Path, secret: str, kind: str) -> None:
    with pytest.raises(KeystoreError) as raised:
        create(tmp_path / "ks.json", secret, kind)
    text = f"{raised.value} {raised.value!r}"
    assert "abandon" not in text
    assert secret not in text


def test_wrong_passphrase_error_does_not_echo_the_passphrase(tmp_path: Path) -> None:
    create(tmp_path / "ks.json")
    with pytest.raises(KeystoreError) as raised:
        keystore.load_keystore(tmp_path / "ks.json", "hunter2-guess")
    assert "hunter2" not in f"{raised.value} {raised.value!r}"


def test_unlocked_key_repr_shows_no_secret(tmp_path: Path) -> None:
    unlocked = create(tmp_path / "ks.json")
    text = repr(unlocked)
    assert unlocked.master.private_key.hex() not in text
    assert unlocked.master.chain_code.hex() not in text
    assert TPRV not in text


def test_keystore_file_holds_no_plaintext_secret(tmp_path: Path) -> None:
    create(tmp_path / "ks.json", TPRV, "xprv")
    text = (tmp_path / "ks.json").read_text()
    assert TPRV not in text
    assert "abandon" not in text


def test_passphrase_from_file_strips_one_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "pass").write_text("secret words\n\n")
    assert keystore.passphrase_from_file(tmp_path / "pass") == "secret words\n"


def test_passphrase_from_env_reads_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VPOOL_TEST_PASSPHRASE", PASSPHRASE)
    assert keystore.passphrase_from_env("VPOOL_TEST_PASSPHRASE") == PASSPHRASE


def test_passphrase_from_unset_env_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VPOOL_TEST_PASSPHRASE", raising=False)
    with pytest.raises(KeystoreError, match="VPOOL_TEST_PASSPHRASE is not set"):
        keystore.passphrase_from_env("VPOOL_TEST_PASSPHRASE")


# --- the command line --------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "mnemonic.txt").write_text(MNEMONIC + "\n")
    (tmp_path / "tprv.txt").write_text(TPRV + "\n")
    (tmp_path / "pass.txt").write_text(PASSPHRASE + "\n")
    return tmp_path


def cli(files: Path, command: str, *args: str) -> int:
    common = ["--file", str(files / "ks.json"), "--network", "regtest"]
    return main(["keystore", command, *common, "--passphrase-file", str(files / "pass.txt"), *args])


def test_cli_create_then_show_xpub_prints_the_account_key(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(files, "create", "--mnemonic-file", str(files / "mnemonic.txt")) == 0
    capsys.readouterr()
    assert cli(files, "show-xpub") == 0
    assert capsys.readouterr().out == ACCOUNT_KEY + "\n"


def test_cli_xprv_keystore_shows_the_same_account_key(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(files, "create", "--xprv-file", str(files / "tprv.txt")) == 0
    capsys.readouterr()
    assert cli(files, "show-xpub") == 0
    assert capsys.readouterr().out == ACCOUNT_KEY + "\n"


def test_cli_show_xpub_at_a_given_path(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(files, "create", "--mnemonic-file", str(files / "mnemonic.txt")) == 0
    capsys.readouterr()
    assert cli(files, "show-xpub", "--path", "m/48'/1'/5'/2'") == 0
    expected = _ORACLE.get_xpub_from_path("m/48'/1'/5'/2'")
    assert capsys.readouterr().out == f"[{FINGERPRINT}/48h/1h/5h/2h]{expected}\n"


def test_cli_reads_the_passphrase_from_the_environment(
    files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VPOOL_TEST_PASSPHRASE", PASSPHRASE)
    args = ["--file", str(files / "ks.json"), "--network", "regtest"]
    args += ["--passphrase-env", "VPOOL_TEST_PASSPHRASE"]
    assert main(["keystore", "create", *args, "--mnemonic-file", str(files / "mnemonic.txt")]) == 0
    unlocked = keystore.load_keystore(files / "ks.json", PASSPHRASE)
    assert unlocked.master.to_string(REGTEST) == TPRV


def test_cli_create_prints_no_secret(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(files, "create", "--mnemonic-file", str(files / "mnemonic.txt")) == 0
    out = capsys.readouterr()
    assert FINGERPRINT in out.out
    assert "abandon" not in out.out + out.err


def test_cli_generate_creates_a_keystore_that_unlocks(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(files, "create", "--generate") == 0
    fingerprint = json.loads((files / "ks.json").read_text())["fingerprint"]
    assert fingerprint in capsys.readouterr().out
    assert keystore.load_keystore(files / "ks.json", PASSPHRASE).kind == "mnemonic"


def test_cli_wrong_passphrase_fails_with_the_clear_error(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(files, "create", "--mnemonic-file", str(files / "mnemonic.txt")) == 0
    (files / "pass.txt").write_text("wrong\n")
    assert cli(files, "show-xpub") == 1
    out = capsys.readouterr()
    assert out.err == "vpool-signer: error: wrong passphrase or corrupted keystore\n"
    assert "tpub" not in out.out


def test_cli_show_xpub_refuses_another_network(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(files, "create", "--mnemonic-file", str(files / "mnemonic.txt")) == 0
    args = ["--file", str(files / "ks.json"), "--network", "mainnet"]
    args += ["--passphrase-file", str(files / "pass.txt")]
    assert main(["keystore", "show-xpub", *args]) == 1
    assert "for regtest, not mainnet" in capsys.readouterr().err


def test_cli_create_refuses_to_overwrite_without_force(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(files, "create", "--mnemonic-file", str(files / "mnemonic.txt")) == 0
    before = (files / "ks.json").read_bytes()
    assert cli(files, "create", "--generate") == 1
    assert "use --force" in capsys.readouterr().err
    assert (files / "ks.json").read_bytes() == before


def test_cli_create_with_force_replaces_the_keystore(files: Path) -> None:
    assert cli(files, "create", "--mnemonic-file", str(files / "mnemonic.txt")) == 0
    assert cli(files, "create", "--xprv-file", str(files / "tprv.txt"), "--force") == 0
    assert keystore.load_keystore(files / "ks.json", PASSPHRASE).kind == "xprv"


def test_cli_without_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert "keystore" in capsys.readouterr().out
