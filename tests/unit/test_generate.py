"""Generated values: the requested length, only the charset's characters, none favoured."""

from __future__ import annotations

import collections

import pytest

from strongroom.sync import _CHARSETS, generate_value


@pytest.mark.parametrize("charset", sorted(_CHARSETS))
def test_every_character_of_the_charset_is_about_equally_likely(charset: str) -> None:
    alphabet = _CHARSETS[charset]
    counts = collections.Counter(generate_value(1_000_000, charset))
    expected = 1_000_000 / len(alphabet)
    assert set(counts) == set(alphabet)
    # A plain ``byte % len`` would put the first 256 % len characters ≈ 20 % (alphanumeric)
    # above and the rest ≈ 30 % (ascii) below the mean; chance alone stays within ±5 % here
    # (over five standard deviations at a million draws).
    assert max(counts.values()) < expected * 1.05
    assert min(counts.values()) > expected * 0.95


@pytest.mark.parametrize("length", [8, 24, 4096])
def test_the_length_is_exact_and_values_differ(length: int) -> None:
    values = {generate_value(length, "hex") for _ in range(20)}
    assert len(values) == 20
    assert all(len(v) == length for v in values)
