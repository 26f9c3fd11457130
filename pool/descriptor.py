"""Output descriptors of the pool's scripts: exactly ``wsh(sortedmulti(m,KEY,...))`` where every
KEY is ``[fingerprint/path]xpub/<branch>/*`` (BIP380, BIP382, BIP383), with BIP380 checksums.

Error messages name positions ("key 2"), never key material.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pool.address import encode_segwit_address
from pool.errors import DescriptorError, HDKeyError
from pool.hdkeys import HARDENED, ExtendedPublicKey, KeyOrigin, format_path
from pool.networks import Network
from pool.script import MAX_MULTISIG_KEYS, multisig_script, p2wsh_script_pubkey

# --- BIP380 checksum ---------------------------------------------------------------------------

_INPUT_CHARSET = (
    "0123456789()[],'/*abcdefgh@:$%{}"
    "IJKLMNOPQRSTUVWXYZ&+-.;<=>?!^_|~"
    'ijklmnopqrstuvwxyzABCDEFGH`#"\\ '
)
_CHECKSUM_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GENERATOR = (0xF5DEE51989, 0xA9FDCA3312, 0x1BAB10E32D, 0x3706B1677A, 0x644D626FFD)
_CHECKSUM_LEN = 8


def _polymod(symbols: Iterable[int]) -> int:
    chk = 1
    for value in symbols:
        top = chk >> 35
        chk = (chk & 0x7FFFFFFFF) << 5 ^ value
        for i, gen in enumerate(_GENERATOR):
            if (top >> i) & 1:
                chk ^= gen
    return chk


def _expand(desc: str) -> list[int]:
    """BIP380 ``descsum_expand``: each character's position in its group, plus group symbols."""
    symbols = []
    groups = []
    for pos, char in enumerate(desc):
        value = _INPUT_CHARSET.find(char)
        if value < 0:
            raise DescriptorError(f"invalid character {char!r} at position {pos} of the descriptor")
        symbols.append(value & 31)
        groups.append(value >> 5)
        if len(groups) == 3:
            symbols.append(groups[0] * 9 + groups[1] * 3 + groups[2])
            groups = []
    if len(groups) == 1:
        symbols.append(groups[0])
    elif len(groups) == 2:
        symbols.append(groups[0] * 3 + groups[1])
    return symbols


def descriptor_checksum(desc: str) -> str:
    """The 8-character BIP380 checksum of a descriptor given without ``#checksum``."""
    checksum = _polymod([*_expand(desc), *[0] * _CHECKSUM_LEN]) ^ 1
    return "".join(
        _CHECKSUM_CHARSET[(checksum >> 5 * (_CHECKSUM_LEN - 1 - i)) & 31]
        for i in range(_CHECKSUM_LEN)
    )


def add_checksum(desc: str) -> str:
    return f"{desc}#{descriptor_checksum(desc)}"


def strip_checksum(text: str) -> str:
    """The descriptor without its optional ``#checksum``, which must be right when present."""
    desc, sep, found = text.partition("#")
    if not sep:
        return text
    if len(found) != _CHECKSUM_LEN:
        raise DescriptorError(
            f"descriptor checksum must be {_CHECKSUM_LEN} characters, found {len(found)}"
        )
    expected = descriptor_checksum(desc)
    if found != expected:
        raise DescriptorError(f"bad descriptor checksum: expected {expected}, found {found}")
    return desc


# --- keys and derived scripts ------------------------------------------------------------------


@dataclass(frozen=True)
class DescriptorKey:
    """An account xpub with its key origin (the branch and index are not part of it)."""

    origin: KeyOrigin
    xpub: ExtendedPublicKey

    def to_string(self, network: Network) -> str:
        """``[d34db33f/48h/1h/0h/2h]tpub...``."""
        return f"[{self.origin.to_string()}]{self.xpub.to_string(network)}"

    @classmethod
    def parse(cls, text: str, network: Network) -> DescriptorKey:
        """Inverse of ``to_string`` (what ``vpool-signer keystore show-xpub`` prints)."""
        key, steps = _parse_key_prefix(text, "key", network)
        if steps:
            raise DescriptorError("key: expected [origin]xpub with no derivation steps after it")
        return key


@dataclass(frozen=True)
class DerivedScript:
    """The script of one (branch, index): keys in BIP67 order, as in the witness script."""

    witness_script: bytes
    script_pubkey: bytes
    pubkeys: tuple[bytes, ...]
    origins: tuple[KeyOrigin, ...]
    """Full origin of each public key (account origin + branch + index), same order as pubkeys."""

    def address(self, network: Network) -> str:
        """The P2WSH bech32 address."""
        return encode_segwit_address(network, 0, self.script_pubkey[2:])


def validate_multisig_keys(m: int, keys: Sequence[DescriptorKey]) -> None:
    """Require 1 <= m <= n <= 15 and no key twice (same public key and chain code)."""
    n = len(keys)
    if n == 0:
        raise DescriptorError("multisig needs at least one key")
    if n > MAX_MULTISIG_KEYS:
        raise DescriptorError(f"multisig has {n} keys, at most {MAX_MULTISIG_KEYS} are allowed")
    if m < 1:
        raise DescriptorError(f"threshold m={m} must be at least 1")
    if m > n:
        raise DescriptorError(f"threshold m={m} exceeds the number of keys n={n}")
    seen: dict[tuple[bytes, bytes], int] = {}
    for position, key in enumerate(keys, 1):
        identity = (key.xpub.public_key, key.xpub.chain_code)
        if identity in seen:
            raise DescriptorError(f"key {position} duplicates key {seen[identity]}")
        seen[identity] = position


# --- the descriptor ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MultisigDescriptor:
    """``wsh(sortedmulti(m, [origin]xpub/<branch>/*, ...))``; keys are kept in the given order."""

    m: int
    keys: tuple[DescriptorKey, ...]
    branch: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", tuple(self.keys))
        validate_multisig_keys(self.m, self.keys)
        if not 0 <= self.branch < HARDENED:
            raise DescriptorError(f"branch {self.branch} outside 0..2^31-1")

    @classmethod
    def parse(cls, text: str, network: Network) -> MultisigDescriptor:
        """Parse a descriptor of ``network``; the ``#checksum`` is optional but checked."""
        m_text, key_texts = _split_sortedmulti(strip_checksum(text))
        m = _parse_threshold(m_text)
        parsed = [_parse_key(key, position, network) for position, key in enumerate(key_texts, 1)]
        branch = parsed[0][1]
        for position, (_, other) in enumerate(parsed, 1):
            if other != branch:
                raise DescriptorError(
                    f"keys have different branches: key 1 uses /{branch}/*, "
                    f"key {position} uses /{other}/*"
                )
        return cls(m, tuple(key for key, _ in parsed), branch)

    def to_string(self, network: Network) -> str:
        """The descriptor with its checksum, keys in the stored order, origins in h notation."""
        keys = ",".join(f"{key.to_string(network)}/{self.branch}/*" for key in self.keys)
        return add_checksum(f"wsh(sortedmulti({self.m},{keys}))")

    def derive(self, index: int) -> DerivedScript:
        """The witness script, output script, keys and key origins at ``/<branch>/<index>``."""
        if not 0 <= index < HARDENED:
            raise DescriptorError(f"address index {index} outside 0..2^31-1")
        children = sorted(
            (
                (
                    key.xpub.descendant_public_key(self.branch, index),
                    key.origin.child(self.branch, index),
                )
                for key in self.keys
            ),
            key=lambda child: child[0],
        )
        pubkeys = tuple(pubkey for pubkey, _ in children)
        witness_script = multisig_script(self.m, pubkeys)
        return DerivedScript(
            witness_script=witness_script,
            script_pubkey=p2wsh_script_pubkey(witness_script),
            pubkeys=pubkeys,
            origins=tuple(origin for _, origin in children),
        )


_PREFIX = "wsh(sortedmulti("
_SUFFIX = "))"


def _split_sortedmulti(desc: str) -> tuple[str, list[str]]:
    """The threshold text and the key texts of ``wsh(sortedmulti(...))``."""
    if not (desc.startswith(_PREFIX) and desc.endswith(_SUFFIX)):
        raise DescriptorError(
            f"unsupported descriptor {_shape(desc)}: only wsh(sortedmulti(...)) is supported"
        )
    args = desc[len(_PREFIX) : -len(_SUFFIX)]
    if "(" in args or ")" in args:
        raise DescriptorError("malformed wsh(sortedmulti(...)): unbalanced parentheses")
    m_text, *key_texts = args.split(",")
    if not key_texts:
        raise DescriptorError("sortedmulti has no keys")
    return m_text, key_texts


def _shape(desc: str) -> str:
    """The nesting of script functions, e.g. ``sh(multi(...))``, without any argument."""
    match = re.match(r"(?:[a-z_]+\()*", desc)
    opening = match.group(0) if match else ""
    if not opening:
        return "expression"
    return opening + "..." + ")" * opening.count("(")


def _parse_threshold(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,2}", text):
        raise DescriptorError("threshold m must be a decimal number below 100")
    return int(text)


def _parse_key(text: str, position: int, network: Network) -> tuple[DescriptorKey, int]:
    """``([origin]xpub, branch)`` of ``[origin]xpub/<branch>/*``."""
    where = f"key {position}"
    key, steps = _parse_key_prefix(text, where, network)
    return key, _parse_branch(steps, where)


def _parse_key_prefix(text: str, where: str, network: Network) -> tuple[DescriptorKey, list[str]]:
    """``[origin]xpub`` and the derivation steps that follow it."""
    if not text.startswith("["):
        raise DescriptorError(f"{where} has no key origin [fingerprint/path]")
    origin_text, closed, rest = text[1:].partition("]")
    if not closed:
        raise DescriptorError(f"{where}: key origin has no closing ']'")
    origin = _parse_origin(origin_text, where, network)
    xkey, *steps = rest.split("/")
    try:
        xpub = ExtendedPublicKey.from_string(xkey, network)
    except HDKeyError as exc:
        raise DescriptorError(f"{where}: {exc}") from None
    return DescriptorKey(origin, xpub), steps


def _parse_origin(text: str, where: str, network: Network) -> KeyOrigin:
    if "H" in text:
        raise DescriptorError(f"{where}: use h or ' as hardened marker, not H (BIP380)")
    try:
        origin = KeyOrigin.parse(text)
    except HDKeyError as exc:
        raise DescriptorError(f"{where}: {exc}") from None
    path = origin.path
    if len(path) >= 2 and path[0] == 48 + HARDENED and path[1] != network.coin_type + HARDENED:
        raise DescriptorError(
            f"{where}: origin path {format_path(path)} has coin type {format_path(path[1:2])}, "
            f"but {network.name} uses {network.coin_type}h"
        )
    return origin


def _parse_branch(steps: list[str], where: str) -> int:
    """The branch of a ``/<branch>/*`` suffix (given as ``[branch, "*"]``)."""
    if steps and steps[-1] in ("*h", "*'", "*H"):
        raise DescriptorError(f"{where}: hardened wildcard is not supported")
    if len(steps) != 2 or steps[1] != "*":
        raise DescriptorError(
            f"{where}: derivation suffix must be /<branch>/* with one unhardened branch step"
        )
    if steps[0][-1:] in ("h", "'", "H"):
        raise DescriptorError(f"{where}: the branch step must be unhardened")
    if not re.fullmatch(r"[0-9]{1,10}", steps[0]) or int(steps[0]) >= HARDENED:
        raise DescriptorError(f"{where}: branch must be a number in 0..2^31-1")
    return int(steps[0])
