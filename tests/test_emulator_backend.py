"""The emulator backend: its signatures are those of each input's key derived from the master."""

from __future__ import annotations

from pool.hdkeys import HARDENED
from pool.networks import REGTEST
from pool.psbt import Psbt
from pool.roles import sign_psbt
from pool.withdrawal import build_round
from signer.backends.emulator import EmulatorBackend
from tests.factories import BTC, make_series, manifest, master_key, request, utxo

SERIES = make_series(1, 2, [0, 1, 2])


def _round_psbt() -> Psbt:
    m = manifest(
        [SERIES],
        [utxo(n, BTC, 900, branch=n % 2, index=n) for n in range(4)],
        [request("alice", f"w{n}", BTC // 2) for n in range(6)],
    )
    return build_round(m).transactions[0].psbt


def test_the_emulator_backend_signs_as_a_full_derivation_from_the_master_would() -> None:
    psbt = _round_psbt()
    master = master_key(1)
    backend = EmulatorBackend(master, REGTEST)
    expected = sign_psbt(psbt, master.fingerprint, lambda p: master.derive_path(p).private_key)
    assert backend.sign(psbt) == expected
    assert backend.sign(psbt) == expected


def test_the_emulator_backend_derives_keys_on_paths_shorter_than_two_levels() -> None:
    master = master_key(2)
    backend = EmulatorBackend(master, REGTEST)
    for path in [(), (5,), (HARDENED, 3)]:
        assert backend._private_key_at(path) == master.derive_path(path).private_key


def test_the_emulator_backend_forgets_its_account_keys_when_closed() -> None:
    backend = EmulatorBackend(master_key(3), REGTEST)
    psbt = _round_psbt()
    backend.sign(psbt)
    backend.close()
    assert backend._accounts == {}
