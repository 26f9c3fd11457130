"""Encrypted keystore: a signer's master secret in a passphrase-protected JSON file.

The secret (a BIP39 mnemonic or a master xprv) is encrypted with ChaCha20-Poly1305 under a key
from scrypt. Every other field of the file is bound to the ciphertext as associated data, so a
changed header fails like a wrong passphrase. No message or repr ever contains a secret.
"""

from __future__ import annotations

import json
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from mnemonic import Mnemonic

from pool.errors import HDKeyError, VpoolError
from pool.hdkeys import HARDENED, ExtendedPrivateKey, KeyOrigin
from pool.networks import Network, get_network
from vpool.fileio import write_atomic

FORMAT_VERSION = 1
KINDS = ("mnemonic", "xprv")
KDF = "scrypt"
CIPHER = "chacha20-poly1305"
DEFAULT_SCRYPT_N = 2**15
MAX_SCRYPT_N = 2**20
SCRYPT_R = 8
SCRYPT_P = 1
_SALT_LEN = 16
_NONCE_LEN = 12
_FIELDS = {"version", "kind", "network", "fingerprint", "kdf", "kdf_params", "cipher", "nonce"}
_WRONG_PASSPHRASE = "wrong passphrase or corrupted keystore"


class KeystoreError(Exception):
    """A keystore that cannot be created or opened; the message never contains a secret."""


@dataclass(frozen=True)
class UnlockedKey:
    """The master key of an opened keystore."""

    kind: str
    network: Network
    master: ExtendedPrivateKey = field(repr=False)
    mnemonic: str | None = field(default=None, repr=False)
    """The BIP39 words of a ``mnemonic`` keystore (None for an ``xprv`` one: it has none)."""

    def xpub_at(self, path: tuple[int, ...]) -> tuple[KeyOrigin, str]:
        """The key origin and the extended public key (in this network's encoding) at ``path``."""
        xpub = self.master.derive_path(path).public().to_string(self.network)
        return KeyOrigin(self.master.fingerprint, path), xpub


def bip48_account_path(network: Network) -> tuple[int, ...]:
    """``m/48h/<coin>h/0h/2h``: account 0 of BIP48 native segwit multisig."""
    return tuple(i + HARDENED for i in (48, network.coin_type, 0, 2))


def generate_mnemonic() -> str:
    """A new 24-word English BIP39 mnemonic from the OS random generator."""
    words: str = Mnemonic("english").generate(strength=256)
    return words


def create_keystore(
    path: Path,
    secret: str,
    kind: str,
    passphrase: str,
    network: str,
    *,
    scrypt_n: int = DEFAULT_SCRYPT_N,
    overwrite: bool = False,
) -> UnlockedKey:
    """Encrypt ``secret`` (a mnemonic or a master xprv of ``network``) into a new file at ``path``.

    The file is written atomically with mode 0600; an existing file is kept unless ``overwrite``.
    """
    net = _network(network)
    plaintext, master = _check_secret(kind, secret, net)
    if not passphrase:
        raise KeystoreError("the keystore passphrase must not be empty")
    _check_scrypt_n(scrypt_n)
    header: dict[str, Any] = {
        "version": FORMAT_VERSION,
        "kind": kind,
        "network": net.name,
        "fingerprint": master.fingerprint.hex(),
        "kdf": KDF,
        "kdf_params": {
            "n": scrypt_n,
            "r": SCRYPT_R,
            "p": SCRYPT_P,
            "salt": os.urandom(_SALT_LEN).hex(),
        },
        "cipher": CIPHER,
        "nonce": os.urandom(_NONCE_LEN).hex(),
    }
    cipher = ChaCha20Poly1305(_derive_key(passphrase, header["kdf_params"]))
    ciphertext = cipher.encrypt(bytes.fromhex(header["nonce"]), plaintext, _aad(header))
    document = json.dumps({**header, "ciphertext": ciphertext.hex()}, indent=2, sort_keys=True)
    try:
        write_atomic(path, document.encode() + b"\n", mode=0o600, overwrite=overwrite)
    except FileExistsError:
        raise KeystoreError(f"{path} exists (use --force to replace it)") from None
    return UnlockedKey(kind, net, master, _words(kind, plaintext))


def _words(kind: str, plaintext: bytes) -> str | None:
    return plaintext.decode() if kind == "mnemonic" else None


def load_keystore(path: Path, passphrase: str) -> UnlockedKey:
    """Decrypt the keystore at ``path``; a wrong passphrase raises :class:`KeystoreError`."""
    try:
        document = json.loads(path.read_bytes())
    except OSError as e:
        raise KeystoreError(f"cannot read keystore {path}: {e.strerror}") from None
    except ValueError:
        raise KeystoreError(f"{path} is not a keystore (not JSON)") from None
    header, ciphertext = _parse(document)
    net = _network(header["network"])
    cipher = ChaCha20Poly1305(_derive_key(passphrase, header["kdf_params"]))
    try:
        plaintext = cipher.decrypt(bytes.fromhex(header["nonce"]), ciphertext, _aad(header))
    except InvalidTag:
        raise KeystoreError(_WRONG_PASSPHRASE) from None
    words, master = _check_secret(header["kind"], plaintext.decode(), net)
    if master.fingerprint.hex() != header["fingerprint"]:
        raise KeystoreError(f"{path}: the key does not match the keystore's fingerprint")
    return UnlockedKey(header["kind"], net, master, _words(header["kind"], words))


def passphrase_from_env(var: str) -> str:
    """The passphrase in environment variable ``var``."""
    value = os.environ.get(var)
    if not value:
        raise KeystoreError(f"environment variable {var} is not set or empty")
    return value


def passphrase_from_file(path: Path) -> str:
    """The passphrase in the file at ``path``, without one trailing newline."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise KeystoreError(f"cannot read passphrase file {path}: {e.strerror}") from None
    return text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")


def _network(name: str) -> Network:
    try:
        return get_network(name)
    except VpoolError as e:
        raise KeystoreError(str(e)) from None


def _check_secret(kind: str, secret: str, network: Network) -> tuple[bytes, ExtendedPrivateKey]:
    """The normalized plaintext of a secret and its master key; refuses a bad secret."""
    if kind == "mnemonic":
        words = " ".join(unicodedata.normalize("NFKD", secret).split())
        if not Mnemonic("english").check(words):
            raise KeystoreError("not a valid English BIP39 mnemonic (unknown word or checksum)")
        return words.encode(), ExtendedPrivateKey.from_seed(Mnemonic.to_seed(words, ""))
    if kind == "xprv":
        text = secret.strip()
        try:
            master = ExtendedPrivateKey.from_string(text, network)
        except HDKeyError as e:
            raise KeystoreError(f"bad xprv: {e}") from None
        if master.depth != 0:
            raise KeystoreError(
                f"the xprv must be a master key (depth 0), not depth {master.depth}"
            )
        return text.encode(), master
    raise KeystoreError(f"unknown keystore kind {kind!r} (known: {', '.join(KINDS)})")


def _check_scrypt_n(n: object) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 2 or n > MAX_SCRYPT_N or n & (n - 1):
        raise KeystoreError(f"scrypt n must be a power of two from 2 to {MAX_SCRYPT_N}")


def _derive_key(passphrase: str, params: dict[str, Any]) -> bytes:
    kdf = Scrypt(
        salt=bytes.fromhex(params["salt"]), length=32, n=params["n"], r=params["r"], p=params["p"]
    )
    return kdf.derive(unicodedata.normalize("NFKC", passphrase).encode())


def _aad(header: dict[str, Any]) -> bytes:
    """The associated data: the canonical JSON of every field but the ciphertext."""
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


def _parse(document: object) -> tuple[dict[str, Any], bytes]:
    """Check a keystore document's shape; return its header and ciphertext."""
    fields = _FIELDS | {"ciphertext"}
    if not isinstance(document, dict) or set(document) != fields:
        raise KeystoreError(f"not a keystore: expected the fields {', '.join(sorted(fields))}")
    header = {k: v for k, v in document.items() if k != "ciphertext"}
    for name, value in {"version": FORMAT_VERSION, "kdf": KDF, "cipher": CIPHER}.items():
        if header[name] != value:
            raise KeystoreError(f"keystore field {name}: expected {value!r}")
    if header["kind"] not in KINDS:
        raise KeystoreError(f"keystore field kind: expected one of {', '.join(KINDS)}")
    if not isinstance(header["network"], str):
        raise KeystoreError("keystore field network: expected a network name")
    params = header["kdf_params"]
    if not isinstance(params, dict) or set(params) != {"n", "r", "p", "salt"}:
        raise KeystoreError("keystore field kdf_params: expected n, r, p and salt")
    _check_scrypt_n(params["n"])
    if params["r"] != SCRYPT_R or params["p"] != SCRYPT_P:
        raise KeystoreError(f"keystore field kdf_params: expected r={SCRYPT_R}, p={SCRYPT_P}")
    _hex_field("kdf_params.salt", params["salt"], _SALT_LEN)
    _hex_field("nonce", header["nonce"], _NONCE_LEN)
    return header, _hex_field("ciphertext", document["ciphertext"], None)


def _hex_field(name: str, value: object, length: int | None) -> bytes:
    try:
        data = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        data = None
    if data is None or (length is not None and len(data) != length):
        size = f"{length} bytes of " if length else ""
        raise KeystoreError(f"keystore field {name}: expected {size}hex")
    return data
