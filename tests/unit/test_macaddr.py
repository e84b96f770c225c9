"""MAC addresses: the one parser and formatter (`provision.macaddr`), and `BadMac` in the exception tree."""

from __future__ import annotations

import pytest

from provision.errors import FatalError, ProvisionError
from provision.macaddr import BadMac, format_mac, mac_bytes, normalize_mac

MAC = "52:54:00:12:34:56"


@pytest.mark.parametrize(
    "text",
    ["52:54:00:12:34:56", "52%3A54%3A00%3A12%3A34%3A56", "52-54-00-12-34-56", "525400123456", " 52:54:00:12:34:56 "],
)
def test_normalize_mac_accepts_the_usual_spellings(text: str) -> None:
    assert normalize_mac(text) == MAC


def test_format_mac_formats_any_number_of_bytes() -> None:
    assert format_mac(bytes.fromhex("525400123456")) == MAC
    assert format_mac(b"") == ""  # a DHCP packet with hlen 0
    assert format_mac(bytes(range(16))) == "00:01:02:03:04:05:06:07:08:09:0a:0b:0c:0d:0e:0f"


def test_mac_bytes_is_the_inverse_of_format_mac() -> None:
    assert mac_bytes(MAC) == bytes.fromhex("525400123456")
    assert mac_bytes("52-54-00-12-34-56") == mac_bytes("525400123456") == mac_bytes(MAC)
    assert format_mac(mac_bytes(MAC)) == MAC


@pytest.mark.parametrize("text", ["", "zz:54:00:12:34:56", "52:54:00:12:34", "52:54:00:12:34:56:78"])
def test_text_that_is_not_a_mac_raises_bad_mac(text: str) -> None:
    with pytest.raises(BadMac) as info:
        mac_bytes(text)
    assert info.value.text == text and str(info.value) == f"not a MAC address: {text!r}"
    with pytest.raises(BadMac):
        normalize_mac(text)


def test_bad_mac_is_in_the_one_exception_tree() -> None:
    error = BadMac("x" * 100)
    assert isinstance(error, FatalError) and isinstance(error, ProvisionError) and isinstance(error, ValueError)
    assert error.text == "x" * 64 and error.facts == {"text": "x" * 64}
    assert str(error) == f"not a MAC address: {'x' * 64!r}"
