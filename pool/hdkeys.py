"""BIP32 hierarchical deterministic keys, derivation paths and key origins, on libsecp256k1.

Public derivation is cached (the pool derives thousands of addresses from the same xpubs);
private derivation is not, so that no secret lingers in a module-level cache.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property, lru_cache

from coincurve import PublicKey

from pool.address import base58check_decode, base58check_encode
from pool.errors import AddressError, HDKeyError
from pool.hashes import hash160, hmac_sha512
from pool.networks import NETWORKS, Network

HARDENED = 0x80000000
_MAX_INDEX = 0xFFFFFFFF
_CURVE_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_EXTENDED_KEY_LEN = 78
_PATH_COMPONENT = re.compile(r"([0-9]+)([hH']?)")
_MAX_COMPONENT_LEN = len("2147483647h")


# --- paths -------------------------------------------------------------------------------------


def parse_path(text: str) -> tuple[int, ...]:
    """Parse ``m/48h/1'/0H/2`` (the ``m/`` is optional; ``""`` and ``"m"`` are the empty path)."""
    if text in ("", "m"):
        return ()
    body = text[2:] if text.startswith("m/") else text
    return tuple(_parse_path_component(part) for part in body.split("/"))


def _parse_path_component(part: str) -> int:
    """One step such as ``48h``. Errors quote the step only when it is short enough to be one,
    so that a key pasted into a path is never echoed."""
    shown = repr(part) if len(part) <= _MAX_COMPONENT_LEN else f"of {len(part)} characters"
    match = _PATH_COMPONENT.fullmatch(part)
    if match is None:
        raise HDKeyError(f"bad path component {shown}")
    index = int(match.group(1))
    if index >= HARDENED:
        raise HDKeyError(f"path component {shown} is not below 2^31")
    return index + HARDENED if match.group(2) else index


def format_path(path: Iterable[int]) -> str:
    """``48h/1h/0h/2h`` style: h for hardened steps, no leading ``m/``."""
    return "/".join(_format_index(index) for index in path)


def _format_index(index: int) -> str:
    _check_index(index)
    return f"{index - HARDENED}h" if index >= HARDENED else str(index)


def _check_index(index: int) -> None:
    if not 0 <= index <= _MAX_INDEX:
        raise HDKeyError(f"child index {index} outside 0..2^32-1")


@dataclass(frozen=True)
class KeyOrigin:
    """Where a key comes from: the master key's fingerprint and the path from it."""

    fingerprint: bytes
    path: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.fingerprint) != 4:
            raise HDKeyError(f"key origin fingerprint must be 4 bytes, got {len(self.fingerprint)}")
        object.__setattr__(self, "path", tuple(self.path))
        for index in self.path:
            _check_index(index)

    def to_string(self) -> str:
        """``d34db33f/48h/1h/0h/2h`` (lowercase hex, h notation, no brackets)."""
        path = format_path(self.path)
        return f"{self.fingerprint.hex()}/{path}" if path else self.fingerprint.hex()

    @classmethod
    def parse(cls, text: str) -> KeyOrigin:
        """Inverse of ``to_string``; also accepts ``'`` and ``H`` as hardened markers."""
        fingerprint, sep, path = text.partition("/")
        if not re.fullmatch(r"[0-9a-fA-F]{8}", fingerprint):
            raise HDKeyError("key origin must start with an 8 hex digit fingerprint")
        steps = path.split("/") if sep else []
        return cls(bytes.fromhex(fingerprint), tuple(_parse_path_component(s) for s in steps))

    def child(self, *indices: int) -> KeyOrigin:
        """The origin of a key derived from this one by ``indices``."""
        return KeyOrigin(self.fingerprint, self.path + indices)


# --- extended key encoding ---------------------------------------------------------------------


def _check_metadata(
    depth: int, parent_fingerprint: bytes, child_number: int, chain_code: bytes
) -> None:
    if not 0 <= depth <= 255:
        raise HDKeyError(f"extended key depth {depth} outside 0..255")
    if len(parent_fingerprint) != 4:
        raise HDKeyError("extended key parent fingerprint must be 4 bytes")
    _check_index(child_number)
    if len(chain_code) != 32:
        raise HDKeyError("extended key chain code must be 32 bytes")
    if depth == 0 and (parent_fingerprint != bytes(4) or child_number != 0):
        raise HDKeyError("a master key (depth 0) must have zero parent fingerprint and index")


def _serialize(
    version: bytes,
    depth: int,
    parent_fingerprint: bytes,
    child_number: int,
    chain_code: bytes,
    key_data: bytes,
) -> bytes:
    return (
        version
        + bytes([depth])
        + parent_fingerprint
        + child_number.to_bytes(4, "big")
        + chain_code
        + key_data
    )


def _network_names(version: bytes) -> str:
    return "/".join(
        n.name for n in NETWORKS.values() if version in (n.xpub_version, n.xprv_version)
    )


def _check_version(version: bytes, network: Network, private: bool) -> None:
    """Refuse a key of the wrong kind or network; messages never quote the key."""
    is_private = version in {n.xprv_version for n in NETWORKS.values()}
    is_public = version in {n.xpub_version for n in NETWORKS.values()}
    if not is_private and not is_public:
        raise HDKeyError(f"unknown extended key version {version.hex()}")
    if is_private and not private:
        raise HDKeyError(
            "refusing an extended private key where an extended public key is expected"
        )
    if is_public and private:
        raise HDKeyError(
            "an extended public key was given where an extended private key is expected"
        )
    if version != (network.xprv_version if private else network.xpub_version):
        raise HDKeyError(f"extended key is for {_network_names(version)}, not {network.name}")


def _base58_payload(text: str) -> bytes:
    try:
        return base58check_decode(text)
    except AddressError as exc:
        raise HDKeyError(f"extended key: {exc}") from None


def _decode(data: bytes, network: Network, private: bool) -> tuple[int, bytes, int, bytes, bytes]:
    """``(depth, parent_fingerprint, child_number, chain_code, key_data)`` of a serialized key."""
    if len(data) != _EXTENDED_KEY_LEN:
        raise HDKeyError(f"extended key must be {_EXTENDED_KEY_LEN} bytes, got {len(data)}")
    _check_version(data[:4], network, private)
    return data[4], data[5:9], int.from_bytes(data[9:13], "big"), data[13:45], data[45:]


# --- public keys -------------------------------------------------------------------------------


@lru_cache(maxsize=1 << 16)
def _derive_public_child(chain_code: bytes, public_key: bytes, index: int) -> tuple[bytes, bytes]:
    """BIP32 CKDpub: ``(child chain code, child compressed public key)``."""
    digest = hmac_sha512(chain_code, public_key + index.to_bytes(4, "big"))
    try:
        child: bytes = PublicKey(public_key).add(digest[:32]).format(compressed=True)
    except ValueError:
        raise HDKeyError(f"child {index} is invalid; BIP32 says to use the next index") from None
    return digest[32:], child


@dataclass(frozen=True)
class ExtendedPublicKey:
    """A BIP32 extended public key (xpub/tpub); its network is given when it is serialized."""

    depth: int
    parent_fingerprint: bytes
    child_number: int
    chain_code: bytes
    public_key: bytes
    """33-byte compressed point."""

    def __post_init__(self) -> None:
        _check_metadata(self.depth, self.parent_fingerprint, self.child_number, self.chain_code)
        if len(self.public_key) != 33 or self.public_key[0] not in (2, 3):
            raise HDKeyError("extended public key must hold a 33-byte compressed public key")
        try:
            PublicKey(self.public_key)
        except ValueError:
            raise HDKeyError("extended public key is not a valid curve point") from None

    @classmethod
    def from_string(cls, text: str, network: Network) -> ExtendedPublicKey:
        """Parse an xpub/tpub of ``network``; an xprv/tprv is refused without being echoed."""
        return cls.deserialize(_base58_payload(text), network)

    @classmethod
    def deserialize(cls, data: bytes, network: Network) -> ExtendedPublicKey:
        """Inverse of ``serialize``."""
        return cls(*_decode(data, network, private=False))

    def serialize(self, network: Network) -> bytes:
        """The 78-byte BIP32 serialization."""
        return _serialize(
            network.xpub_version,
            self.depth,
            self.parent_fingerprint,
            self.child_number,
            self.chain_code,
            self.public_key,
        )

    def to_string(self, network: Network) -> str:
        return base58check_encode(self.serialize(network))

    @property
    def fingerprint(self) -> bytes:
        """First 4 bytes of hash160 of the public key."""
        return hash160(self.public_key)[:4]

    def derive_child(self, index: int) -> ExtendedPublicKey:
        """The non-hardened child ``index``."""
        _check_index(index)
        if index >= HARDENED:
            raise HDKeyError(
                f"cannot derive hardened child {_format_index(index)} from a public key"
            )
        chain_code, public_key = _derive_public_child(self.chain_code, self.public_key, index)
        return ExtendedPublicKey(self.depth + 1, self.fingerprint, index, chain_code, public_key)

    def derive_path(self, path: Iterable[int]) -> ExtendedPublicKey:
        key = self
        for index in path:
            key = key.derive_child(index)
        return key

    def descendant_public_key(self, *path: int) -> bytes:
        """The public key at ``path`` below this key (non-hardened): ``derive_path(path)``'s
        public key, through the cached derivations alone (no extended key is built and checked
        on the way: each derived point is valid, ``_derive_public_child`` makes sure)."""
        chain_code, public_key = self.chain_code, self.public_key
        for index in path:
            _check_index(index)
            if index >= HARDENED:
                raise HDKeyError(
                    f"cannot derive hardened child {_format_index(index)} from a public key"
                )
            chain_code, public_key = _derive_public_child(chain_code, public_key, index)
        return public_key


# --- private keys ------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class ExtendedPrivateKey:
    """A BIP32 extended private key (xprv/tprv). Its repr shows neither secret nor chain code."""

    depth: int
    parent_fingerprint: bytes
    child_number: int
    chain_code: bytes
    private_key: bytes
    """32-byte secret scalar."""

    def __post_init__(self) -> None:
        _check_metadata(self.depth, self.parent_fingerprint, self.child_number, self.chain_code)
        if len(self.private_key) != 32:
            raise HDKeyError("extended private key must hold a 32-byte secret")
        if not 0 < int.from_bytes(self.private_key, "big") < _CURVE_ORDER:
            raise HDKeyError("extended private key secret is out of range")

    def __repr__(self) -> str:
        return (
            f"ExtendedPrivateKey(depth={self.depth}, fingerprint={self.fingerprint.hex()}, "
            f"child_number={self.child_number})"
        )

    @classmethod
    def from_seed(cls, seed: bytes) -> ExtendedPrivateKey:
        """The BIP32 master key of a 16 to 64 byte seed."""
        if not 16 <= len(seed) <= 64:
            raise HDKeyError(f"seed must be 16 to 64 bytes, got {len(seed)}")
        digest = hmac_sha512(b"Bitcoin seed", seed)
        return cls(0, bytes(4), 0, digest[32:], digest[:32])

    @classmethod
    def from_string(cls, text: str, network: Network) -> ExtendedPrivateKey:
        return cls.deserialize(_base58_payload(text), network)

    @classmethod
    def deserialize(cls, data: bytes, network: Network) -> ExtendedPrivateKey:
        """Inverse of ``serialize``."""
        depth, parent_fingerprint, child_number, chain_code, key_data = _decode(
            data, network, private=True
        )
        if key_data[0] != 0:
            raise HDKeyError("extended private key data must start with a zero byte")
        return cls(depth, parent_fingerprint, child_number, chain_code, key_data[1:])

    def serialize(self, network: Network) -> bytes:
        return _serialize(
            network.xprv_version,
            self.depth,
            self.parent_fingerprint,
            self.child_number,
            self.chain_code,
            b"\x00" + self.private_key,
        )

    def to_string(self, network: Network) -> str:
        return base58check_encode(self.serialize(network))

    @cached_property
    def public_key(self) -> bytes:
        """33-byte compressed public key."""
        point: bytes = PublicKey.from_valid_secret(self.private_key).format(compressed=True)
        return point

    @property
    def fingerprint(self) -> bytes:
        return hash160(self.public_key)[:4]

    def public(self) -> ExtendedPublicKey:
        """The matching extended public key (same position in the tree)."""
        return ExtendedPublicKey(
            self.depth,
            self.parent_fingerprint,
            self.child_number,
            self.chain_code,
            self.public_key,
        )

    def derive_child(self, index: int) -> ExtendedPrivateKey:
        """BIP32 CKDpriv: hardened when ``index >= HARDENED``."""
        _check_index(index)
        if index >= HARDENED:
            data = b"\x00" + self.private_key + index.to_bytes(4, "big")
        else:
            data = self.public_key + index.to_bytes(4, "big")
        digest = hmac_sha512(self.chain_code, data)
        tweak = int.from_bytes(digest[:32], "big")
        secret = (tweak + int.from_bytes(self.private_key, "big")) % _CURVE_ORDER
        if tweak >= _CURVE_ORDER or secret == 0:
            raise HDKeyError(f"child {index} is invalid; BIP32 says to use the next index")
        child = secret.to_bytes(32, "big")
        return ExtendedPrivateKey(self.depth + 1, self.fingerprint, index, digest[32:], child)

    def derive_path(self, path: Iterable[int]) -> ExtendedPrivateKey:
        key = self
        for index in path:
            key = key.derive_child(index)
        return key
