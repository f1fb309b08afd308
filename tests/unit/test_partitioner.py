"""streamjobs.client.murmur2_partition: the partition Java's default partitioner picks.

Status lookups read only the partition a task id hashes to, so this must agree with the
producer's ``murmur2_random`` partitioner (librdkafka) and Kafka's Java ``Utils.murmur2``.
The reference below is a line-by-line port of the Java source with Java ``int`` semantics
(signed 32-bit wrap-around, ``>>>``, switch fall-through), deliberately unlike the library's.
"""

from __future__ import annotations

import random

import pytest

from streamjobs.client import murmur2_partition
from streamjobs.status import status_partition


def _int(value: int) -> int:
    """Wrap to a Java int."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _ushr(value: int, bits: int) -> int:
    """Java's ``>>>`` on an int."""
    return _int((value & 0xFFFFFFFF) >> bits)


def java_murmur2(data: bytes) -> int:
    length = len(data)
    seed = _int(0x9747B28C)
    m = 0x5BD1E995
    r = 24
    h = _int(seed ^ length)
    length4 = length // 4
    for i in range(length4):
        i4 = i * 4
        k = _int(
            (data[i4 + 0] & 0xFF)
            + ((data[i4 + 1] & 0xFF) << 8)
            + ((data[i4 + 2] & 0xFF) << 16)
            + ((data[i4 + 3] & 0xFF) << 24)
        )
        k = _int(k * m)
        k ^= _ushr(k, r)
        k = _int(k * m)
        h = _int(h * m)
        h ^= k
    rest = length % 4
    base = length & ~3
    if rest == 3:
        h ^= _int((data[base + 2] & 0xFF) << 16)
    if rest >= 2:
        h ^= _int((data[base + 1] & 0xFF) << 8)
    if rest >= 1:
        h ^= data[base] & 0xFF
        h = _int(h * m)
    h ^= _ushr(h, 13)
    h = _int(h * m)
    h ^= _ushr(h, 15)
    return h


def java_partition(key: bytes, partitions: int) -> int:
    """``Utils.toPositive(Utils.murmur2(keyBytes)) % numPartitions``."""
    return (java_murmur2(key) & 0x7FFFFFFF) % partitions


# org.apache.kafka.common.utils.UtilsTest#testMurmur2
KAFKA_VECTORS = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]


@pytest.mark.parametrize(("key", "expected"), KAFKA_VECTORS)
def test_reference_port_reproduces_kafkas_own_murmur2_vectors(key: bytes, expected: int) -> None:
    assert java_murmur2(key) == expected


@pytest.mark.parametrize(("key", "expected"), KAFKA_VECTORS)
def test_partition_is_the_positive_kafka_murmur2_modulo_the_partition_count(
    key: bytes, expected: int
) -> None:
    # with 2**31 partitions the modulo keeps every bit of toPositive(murmur2(key))
    assert murmur2_partition(key, 2**31) == expected & 0x7FFFFFFF
    for partitions in (1, 3, 6, 12, 100):
        assert murmur2_partition(key, partitions) == (expected & 0x7FFFFFFF) % partitions


def test_partition_matches_the_java_port_for_1000_random_keys() -> None:
    rng = random.Random(0x5EED)
    for _ in range(1000):
        key = rng.randbytes(rng.randrange(0, 64))
        partitions = rng.choice((1, 2, 3, 6, 7, 12, 50, 997, 2**31 - 1))
        assert murmur2_partition(key, partitions) == java_partition(key, partitions), key.hex()


def test_every_tail_length_and_high_bytes_match_the_java_port() -> None:
    # bytes >= 0x80 are negative in Java: the & 0xff masking must hold in every tail case
    for length in range(0, 17):
        for fill in (0x00, 0x7F, 0x80, 0xFF):
            key = bytes([fill]) * length
            assert murmur2_partition(key, 2**31) == java_partition(key, 2**31), (length, fill)


def test_status_partition_of_a_task_id_is_its_murmur2_partition() -> None:
    for task_id in ("3f0c9a", "0192d6e1-7a51-7cc3-8b1e-2f3a4b5c6d7e", "", "t\u00e9"):
        assert status_partition(12, task_id) == java_partition(task_id.encode(), 12)
