"""Sealed values: the size of a sealed 32-byte value and the time to seal and to open one,
under each suite (ML-KEM-768+X25519 and X25519; HKDF-SHA256, AES-256-GCM).

"open" starts from the private key bytes as the store keeps them, so it includes expanding the
ML-KEM-768 key from its 64-byte seed; reading the key from the store is not included (the
operator caches it). Median of N runs each, on this machine.

Usage: python -m bench.seal [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import time

from strongroom.sealing.blob import Place, PublicSealingKey, SuiteId, generate, open_sealed, seal

VALUE = "v" * 32
PLACE = Place("payments", "db", "password")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    for suite in SuiteId:
        private, public = generate(suite)
        key = PublicSealingKey("0011223344556677", suite, public)
        seal_ms, open_ms = [], []
        blob = ""
        for _ in range(args.runs):
            start = time.perf_counter()
            blob = seal(key, PLACE, VALUE)
            seal_ms.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            assert open_sealed(blob, PLACE, lambda _h, s=suite, p=private: (s, p)) == VALUE
            open_ms.append((time.perf_counter() - start) * 1000)
        print(f"{suite.label:<16} sealed 32-byte value: {len(blob)} characters "
              f"({len(blob) - 5} base64url of {(len(blob) - 5) * 3 // 4} bytes); "
              f"seal {statistics.median(seal_ms):.3f} ms, open {statistics.median(open_ms):.3f} ms "
              f"(median of {args.runs})")  # fmt: skip


if __name__ == "__main__":
    main()
