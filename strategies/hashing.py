"""A stable 64-bit hash for placing ids on a ring.

Python's built-in ``hash()`` of a ``str`` is salted per process (``PYTHONHASHSEED``), so two
nodes would disagree about where a child belongs. :func:`stable_hash` is BLAKE2b with an
8-byte digest read as a big-endian unsigned integer: every process, platform and Python
version computes the same value for the same input.

Changing this function moves every child in every cluster at once, so the unit tests pin
exact values.
"""

from __future__ import annotations

from hashlib import blake2b

__all__ = ["HASH_BITS", "HASH_SPACE", "stable_hash"]

#: Width of a :func:`stable_hash` value in bits.
HASH_BITS = 64
#: Number of distinct :func:`stable_hash` values; results lie in ``range(HASH_SPACE)``.
HASH_SPACE = 1 << HASH_BITS


def stable_hash(value: str | bytes) -> int:
    """Hash ``value`` to an integer in ``range(2**64)``, the same in every process.

    Args:
        value: the text (encoded as UTF-8) or bytes to hash.

    Returns:
        The 8-byte BLAKE2b digest of ``value``, read as a big-endian unsigned integer.

    Raises:
        UnicodeEncodeError: ``value`` is a ``str`` that is not valid Unicode (lone surrogates).
    """
    data = value.encode("utf-8") if isinstance(value, str) else value
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big")
