"""Fee accounting: dividing one transaction's fee among clients (the voting pool's txFeeNotice)."""

from __future__ import annotations

from collections.abc import Mapping


def largest_remainder(total: int, weights: Mapping[str, int]) -> dict[str, int]:
    """Split ``total`` satoshis in proportion to ``weights``; the parts add up to ``total``.

    Each key first gets ``floor(total * w / W)``. The satoshis left over go one each to the keys
    with the largest remainders ``total * w mod W``, ties broken by the key's UTF-8 bytes in
    ascending order. Keys with weight 0 get 0 unless every weight is 0, in which case the split
    is even (same rule, every weight counted as 1).
    """
    if total < 0:
        raise ValueError("cannot allocate a negative total")
    if not weights:
        if total:
            raise ValueError("cannot allocate a positive total to nobody")
        return {}
    if any(w < 0 for w in weights.values()):
        raise ValueError("weights must not be negative")
    effective = dict(weights) if any(weights.values()) else dict.fromkeys(weights, 1)
    whole = sum(effective.values())
    shares = {key: total * w // whole for key, w in effective.items()}
    left = total - sum(shares.values())
    by_remainder = sorted(
        effective, key=lambda key: (-(total * effective[key] % whole), key.encode())
    )
    for key in by_remainder[:left]:
        shares[key] += 1
    return shares
