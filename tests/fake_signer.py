"""A misbehaving signer for fault-injection tests: an in-process gRPC SignerService peer.

It holds a real cosigner key and speaks the real protocol over mutual TLS, but its signatures
commit to the wrong sighash (the BIP143 digest with the spent amount off by one satoshi): valid
DER, low-S, made by the right key, and still worthless. With ``stall_seconds`` it answers only
after that long instead (a signer that overruns the coordinator's deadline).

``PendingSigner`` plays a signer whose device waits for a person: it answers ``pending`` (no
signatures, no refusals) to its first ``pending_answers`` SignRound calls, then signs every input
of its key correctly; it records every request it received.
"""

from __future__ import annotations

import hashlib
import time
from concurrent import futures
from typing import Any

import grpc

from pool import ecdsa
from pool.hdkeys import ExtendedPrivateKey
from pool.psbt import Psbt
from pool.sighash import SIGHASH_ALL, SegwitV0Sighasher
from vpool.devnet.processes import Pki
from vpool.v1 import signer_pb2, signer_pb2_grpc


class WrongSighashSigner(signer_pb2_grpc.SignerServiceServicer):
    """Signs every input of its key over a wrong digest (or stalls)."""

    amount_offset = 1
    """What the signed digest adds to each input's amount (wrong unless 0)."""

    def __init__(self, master: ExtendedPrivateKey, stall_seconds: float = 0.0) -> None:
        self._master = master
        self._stall_seconds = stall_seconds

    def SignRound(
        self, request: signer_pb2.SignRoundRequest, context: Any
    ) -> signer_pb2.SignRoundResponse:
        time.sleep(self._stall_seconds)
        signed = [
            signer_pb2.SignedPsbt(psbt_index=index, signatures=self._wrong_signatures(raw))
            for index, raw in enumerate(request.psbts)
        ]
        return signer_pb2.SignRoundResponse(
            manifest_hash=hashlib.sha256(request.manifest).digest(),
            signed_psbts=signed,
            signed_all=True,
        )

    def _wrong_signatures(self, raw: bytes) -> list[signer_pb2.PartialSignature]:
        psbt = Psbt.parse(raw)
        sighasher = SegwitV0Sighasher(psbt.tx)
        found = []
        for index, psbt_input in enumerate(psbt.inputs):
            assert psbt_input.witness_script is not None and psbt_input.witness_utxo is not None
            for pubkey, origin in psbt_input.bip32_derivations.items():
                if origin.fingerprint != self._master.fingerprint:
                    continue
                key = self._master.derive_path(origin.path).private_key
                wrong = sighasher.digest(
                    index,
                    psbt_input.witness_script,
                    psbt_input.witness_utxo.value + self.amount_offset,
                )
                signature = ecdsa.sign(key, wrong) + bytes([SIGHASH_ALL])
                found.append(
                    signer_pb2.PartialSignature(
                        input_index=index, pubkey=pubkey, signature=signature
                    )
                )
        return found


class PendingSigner(WrongSighashSigner):
    """Pending for the first ``pending_answers`` calls (forever when None), then signs right."""

    amount_offset = 0

    def __init__(
        self, master: ExtendedPrivateKey, pending_answers: int | None, since: int = 1_700_000_000
    ) -> None:
        super().__init__(master)
        self._pending_answers = pending_answers
        self._since = since
        self.requests: list[bytes] = []
        """Every SignRound request received, serialized."""

    def SignRound(
        self, request: signer_pb2.SignRoundRequest, context: Any
    ) -> signer_pb2.SignRoundResponse:
        self.requests.append(request.SerializeToString(deterministic=True))
        if self._pending_answers is None or len(self.requests) <= self._pending_answers:
            return signer_pb2.SignRoundResponse(
                manifest_hash=hashlib.sha256(request.manifest).digest(),
                pending=True,
                pending_since_unix=self._since,
            )
        return super().SignRound(request, context)


def serve_fake_signer(pki: Pki, name: str, servicer: WrongSighashSigner) -> tuple[grpc.Server, str]:
    """Start the fake on a loopback port with a signer certificate ``name``; (server, address)."""
    cert, key = pki.issue("signer", name)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    signer_pb2_grpc.add_SignerServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    credentials = grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())],
        root_certificates=pki.ca_path.read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, f"127.0.0.1:{port}"
