"""`vpool-signer` operator commands as processes: init, check-config, keystore show-mnemonic,
xpub, display-address and export-multisig on a signer set up by `vpool-signer init` alone."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mnemonic import Mnemonic

from pool.descriptor import MultisigDescriptor, descriptor_checksum
from pool.hdkeys import ExtendedPrivateKey
from pool.networks import REGTEST
from pool.series import CHANGE, RECEIVE, Series, SeriesState
from signer import cli as signer_cli
from signer import keystore
from signer.state import SignerState
from tests.factories import make_series, master_key
from vpool import exitcodes
from vpool.devnet.processes import ROOT, free_port

SERIES = make_series(7, 2, [0, 1, 2])
TIMEOUT = 60


def signer(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VPOOL_")}
    return subprocess.run(
        [sys.executable, "-m", "signer.cli", *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,  # no terminal: nothing is asked
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A signer written by init, with SERIES registered in its state."""
    directory = tmp_path_factory.mktemp("signer")
    done = signer(
        "init", "--dir", str(directory), "--signer-id", "signer-1",
        "--listen", f"127.0.0.1:{free_port()}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with SignerState(directory / "data") as state:
        receive, change = (SERIES.descriptor(b).to_string(REGTEST) for b in (RECEIVE, CHANGE))
        state.register_series(SERIES.id, "regtest", receive, change, time.time())
    yield directory


def config(directory: Path) -> str:
    return str(directory / "signer.toml")


def _words(directory: Path) -> str:
    done = signer(
        "keystore", "show-mnemonic", "--file", str(directory / "keystore.json"),
        "--passphrase-file", str(directory / "passphrase.txt"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_init_writes_a_configuration_that_check_config_accepts(directory: Path) -> None:
    done = signer("check-config", "--config", config(directory))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"OK: {config(directory)} (signer signer-1, regtest")


def test_check_config_refuses_an_unknown_key_naming_it(directory: Path, tmp_path: Path) -> None:
    text = Path(config(directory)).read_text(encoding="utf-8")
    bad = directory / "bad.toml"
    bad.write_text(text.replace("[policy]\n", "[policy]\nmin_treshold = 2\n"), encoding="utf-8")
    done = signer("check-config", "--config", str(bad))
    assert done.returncode == 1
    assert "policy.min_treshold: unknown key" in done.stderr


def test_the_generated_keystore_shows_its_24_words_and_they_make_its_key(directory: Path) -> None:
    words = _words(directory)
    assert len(words.split()) == 24 and Mnemonic("english").check(words)
    master = ExtendedPrivateKey.from_seed(Mnemonic.to_seed(words, ""))
    shown = signer("xpub", "--config", config(directory), "--json")
    assert json.loads(shown.stdout)["origin"].startswith(master.fingerprint.hex() + "/48h/1h/0h/2h")


def test_show_mnemonic_warns_that_the_words_are_the_key(directory: Path) -> None:
    done = signer(
        "keystore", "show-mnemonic", "--file", str(directory / "keystore.json"),
        "--passphrase-file", str(directory / "passphrase.txt"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("WARNING: these words are the signer's key.")
    assert len(done.stdout.split()) == 24  # the words alone on stdout


def test_show_mnemonic_asks_the_passphrase_at_the_terminal(
    directory: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    passphrase = (directory / "passphrase.txt").read_text(encoding="utf-8").strip()
    asked: list[str] = []
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr(getpass, "getpass", lambda prompt: asked.append(prompt) or passphrase)
    keystore_path = directory / "keystore.json"
    assert signer_cli.main(["keystore", "show-mnemonic", "--file", str(keystore_path)]) == 0
    assert asked == [f"passphrase of {keystore_path}: "]
    assert capsys.readouterr().out.split() == _words(directory).split()


def test_show_mnemonic_without_a_terminal_or_a_passphrase_source_is_bad_usage(
    directory: Path,
) -> None:
    done = signer("keystore", "show-mnemonic", "--file", str(directory / "keystore.json"))
    assert done.returncode == exitcodes.USAGE
    assert "give --passphrase-env or --passphrase-file" in done.stderr
    assert done.stdout == ""


def test_show_mnemonic_numbers_the_words_on_request(directory: Path) -> None:
    done = signer(
        "keystore", "show-mnemonic", "--numbered", "--file", str(directory / "keystore.json"),
        "--passphrase-file", str(directory / "passphrase.txt"),
    )  # fmt: skip
    lines = done.stdout.splitlines()
    assert [line.split()[1] for line in lines] == _words(directory).split()
    assert lines[0].split()[0] == "1." and lines[-1].split()[0] == "24."


def test_an_xprv_keystore_has_no_words_to_show(tmp_path: Path) -> None:
    path = tmp_path / "ks.json"
    keystore.create_keystore(path, master_key(3).to_string(REGTEST), "xprv", "pass", "regtest")
    (tmp_path / "pass.txt").write_text("pass\n")
    done = signer(
        "keystore", "show-mnemonic", "--file", str(path), "--passphrase-file",
        str(tmp_path / "pass.txt"),
    )  # fmt: skip
    assert done.returncode == exitcodes.REFUSED
    assert "holds a master xprv, not a mnemonic: it has no words to show" in done.stderr
    assert done.stdout == ""


def test_xpub_prints_the_keystores_account_key(directory: Path) -> None:
    done = signer("xpub", "--config", config(directory))
    shown = signer(
        "keystore", "show-xpub", "--network", "regtest", "--file",
        str(directory / "keystore.json"), "--passphrase-file", str(directory / "passphrase.txt"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == shown.stdout and done.stdout.startswith("[")


def test_display_address_computes_the_registered_series_address(directory: Path) -> None:
    done = signer(
        "display-address", "--config", config(directory), "--series-id", "7", "--index", "5"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == SERIES.address(RECEIVE, 5, REGTEST)
    change = signer(
        "display-address", "--config", config(directory), "--series-id", "7", "--index", "5",
        "--change", "--json",
    )  # fmt: skip
    assert json.loads(change.stdout) == {
        "address": SERIES.address(CHANGE, 5, REGTEST),
        "shown_on_device": False,
    }


def test_a_series_the_signer_never_registered_exits_not_found(directory: Path) -> None:
    done = signer("export-multisig", "--config", config(directory), "--series-id", "8")
    assert done.returncode == exitcodes.NOT_FOUND
    assert "series 8 is not registered with this signer (known: 7)" in done.stderr


def _export(directory: Path, form: str) -> str:
    done = signer(
        "export-multisig", "--config", config(directory), "--series-id", "7", "--format", form
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_export_as_descriptors_gives_back_the_registered_series(directory: Path) -> None:
    receive, change = _export(directory, "descriptor").splitlines()
    exported = Series.from_descriptors(7, receive, change, SeriesState.ACTIVE, REGTEST)
    assert exported == SERIES
    assert MultisigDescriptor.parse(receive, REGTEST).branch == RECEIVE


def test_export_as_bsms_is_a_bip129_descriptor_record(directory: Path) -> None:
    version, template, paths, first = _export(directory, "bsms").splitlines()
    assert (version, paths) == ("BSMS 1.0", "/0/*,/1/*")
    body, checksum = template.split("#")
    assert descriptor_checksum(body) == checksum
    assert template.count("/**") == 3 and body.startswith("wsh(sortedmulti(2,[")
    assert first == SERIES.address(RECEIVE, 0, REGTEST)


def test_export_for_coldcard_and_caravan_names_every_key(directory: Path) -> None:
    coldcard = _export(directory, "coldcard")
    assert "Policy: 2 of 3" in coldcard and "Format: P2WSH" in coldcard
    caravan = json.loads(_export(directory, "caravan"))
    assert caravan["quorum"] == {"requiredSigners": 2, "totalSigners": 3}
    for key in SERIES.keys:
        fingerprint = key.origin.fingerprint.hex()
        assert f"{fingerprint.upper()}: {key.xpub.to_string(REGTEST)}" in coldcard
        assert {"xfp": fingerprint, "bip32Path": "m/48'/1'/0'/2'"}.items() <= next(
            k for k in caravan["extendedPublicKeys"] if k["xfp"] == fingerprint
        ).items()
