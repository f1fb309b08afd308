"""Key to partition, the way Java's default partitioner (and our ``murmur2_random``) does it.

Owns the pure murmur2 hash, so a reader can find the partition a key was written to without
asking Kafka. Does not produce anything.
"""

from __future__ import annotations


def murmur2_partition(key: bytes, partitions: int) -> int:
    """Java's default partitioner (murmur2, positive, modulo), as librdkafka's ``murmur2``."""
    return (_murmur2(key) & 0x7FFFFFFF) % partitions


def _murmur2(data: bytes) -> int:
    m, r, mask = 0x5BD1E995, 24, 0xFFFFFFFF
    length = len(data)
    h = (0x9747B28C ^ length) & mask
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & mask
        k ^= k >> r
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    tail = length % 4
    base = length - tail
    if tail >= 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h
