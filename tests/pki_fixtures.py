"""The development PKI of the tests that play the coordinator against signer daemons."""

from __future__ import annotations

import pytest

from vpool.devnet.processes import Pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA of the module's own, with the coordinator's certificate issued (modules that need
    other certificates define their own ``pki``)."""
    pki = Pki(tmp_path_factory.mktemp("pki"))
    pki.issue("coordinator", "coordinator")
    return pki
