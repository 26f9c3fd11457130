"""Bitcoin's byte encodings: little-endian integers and CompactSize, with a strict reader.

The reader refuses truncated input and non-minimal CompactSize encodings, so that every value
has exactly one encoding (the manifest hash and PSBT byte equality depend on it).
"""

from __future__ import annotations

import struct

from pool.errors import EncodingError


def u8(n: int) -> bytes:
    return struct.pack("<B", n)


def u32le(n: int) -> bytes:
    return struct.pack("<I", n)


def u64le(n: int) -> bytes:
    return struct.pack("<Q", n)


def compact_size(n: int) -> bytes:
    if n < 0:
        raise ValueError("compact_size of a negative number")
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + struct.pack("<H", n)
    if n <= 0xFFFFFFFF:
        return b"\xfe" + struct.pack("<I", n)
    return b"\xff" + struct.pack("<Q", n)


def compact_size_len(n: int) -> int:
    """Length in bytes of ``compact_size(n)``."""
    return 1 if n < 0xFD else 3 if n <= 0xFFFF else 5 if n <= 0xFFFFFFFF else 9


def var_bytes(data: bytes) -> bytes:
    """CompactSize length prefix followed by the bytes."""
    return compact_size(len(data)) + data


class Reader:
    """Reads a byte string front to back; every short read raises ``EncodingError``."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def read(self, n: int) -> bytes:
        if n < 0 or self._pos + n > len(self._data):
            raise EncodingError(
                f"truncated: wanted {n} bytes at offset {self._pos}, {self.remaining} left"
            )
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def u8(self) -> int:
        pos = self._pos
        if pos >= len(self._data):
            return self.read(1)[0]  # raises the truncation error
        self._pos = pos + 1
        return self._data[pos]

    def u16(self) -> int:
        return int(struct.unpack("<H", self.read(2))[0])

    def u32(self) -> int:
        return int(struct.unpack("<I", self.read(4))[0])

    def u64(self) -> int:
        return int(struct.unpack("<Q", self.read(8))[0])

    def compact_size(self) -> int:
        pos = self._pos
        if pos < len(self._data) and self._data[pos] < 0xFD:  # the one-byte form, inline
            self._pos = pos + 1
            return self._data[pos]
        first = self.u8()
        if first < 0xFD:
            return first
        if first == 0xFD:
            n, least = self.u16(), 0xFD
        elif first == 0xFE:
            n, least = self.u32(), 0x10000
        else:
            n, least = self.u64(), 0x100000000
        if n < least:
            raise EncodingError(f"non-minimal CompactSize {n} at offset {self._pos}")
        return n

    def var_bytes(self, limit: int | None = None) -> bytes:
        n = self.compact_size()
        if limit is not None and n > limit:
            raise EncodingError(f"length {n} exceeds the limit of {limit} bytes")
        return self.read(n)

    def done(self) -> None:
        """Raise unless every byte was consumed."""
        if self.remaining:
            raise EncodingError(f"{self.remaining} trailing bytes at offset {self._pos}")
