"""Base64 helpers for text-only transports."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import trionos


@given(st.binary())
def test_round_trip(data: bytes) -> None:
    """Any bytes survive encode_base64 then decode_base64."""
    assert trionos.decode_base64(trionos.encode_base64(data)) == data


@pytest.mark.parametrize("bad", ["abc", "ab!d", "é===", "YQ==YQ=="])
def test_bad_base64_is_a_decode_error(bad: str) -> None:
    """Malformed base64 raises DecodeError naming the input."""
    with pytest.raises(trionos.DecodeError, match="invalid base64"):
        trionos.decode_base64(bad)


def test_base64_of_something_other_than_text_is_a_decode_error() -> None:
    """A non-str field value (a peer sent a number where base64 belongs) raises DecodeError."""
    with pytest.raises(trionos.DecodeError, match="expected base64 text \\(str\\), got int"):
        trionos.decode_base64(5)  # type: ignore[arg-type]
