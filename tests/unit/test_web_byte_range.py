"""The single byte range ``GET /chunks/<sha256>`` serves (provision.web.images.byte_range), on hostile forms."""

from __future__ import annotations

import pytest

from provision.web.images import byte_range

SIZE = 100


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", (0, 99)),
        ("bytes=5-", (5, 99)),
        (" BYTES = 1-2 ", (1, 2)),
        ("bytes=10-1000", (10, 99)),
        ("bytes=0-" + "9" * 5000, (0, 99)),  # longer than int() converts: clipped, not an error
        ("bytes=" + "0" * 30 + "7-9", (7, 9)),  # leading zeros are still the number
    ],
)
def test_a_single_range_is_clipped_to_the_frame(header: str, expected: tuple[int, int]) -> None:
    assert byte_range(header, SIZE) == expected


@pytest.mark.parametrize(
    "header",
    [None, "bytes=-5", "bytes=1-2,4-5", "items=0-1", "bytes=9-3", "bytes=1 -2", "bytes=-",
     "bytes=\xb2-", "bytes=\u0663-5", "bytes=1-\xb2"],  # superscript two, Arabic-Indic three: not ASCII digits
)  # fmt: skip
def test_other_forms_get_the_whole_frame(header: str | None) -> None:
    assert byte_range(header, SIZE) is None


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=" + "9" * 5000 + "-"])
def test_a_range_past_the_end_is_refused(header: str) -> None:
    with pytest.raises(ValueError, match="range starts at"):
        byte_range(header, SIZE)
