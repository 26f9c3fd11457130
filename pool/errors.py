"""Errors raised by the pure core. Every error names what is wrong, never a secret."""

from __future__ import annotations


class VpoolError(ValueError):
    """Base class of every error the core raises on bad input."""


class FieldError(VpoolError):
    """Bad input in a named field (``field`` is a dotted path such as ``requests[3].amount``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


class EncodingError(VpoolError):
    """Bytes that do not decode (truncated, trailing data, non-canonical)."""


class AddressError(VpoolError):
    """An address that is malformed or belongs to another network."""


class HDKeyError(VpoolError):
    """A malformed extended key, key origin or derivation path."""


class DescriptorError(VpoolError):
    """A descriptor that does not parse or breaks a rule (checksum, m > n, duplicate keys...)."""


class ManifestError(FieldError):
    """A round manifest that is malformed or inconsistent."""


class PsbtError(VpoolError):
    """A PSBT that is malformed, of the wrong version, or cannot be combined/finalized."""


class SignatureError(VpoolError):
    """A signature that is malformed, high-S, or does not verify."""
