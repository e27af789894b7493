"""Aligned buffers: page-aligned memory, blobs within their capacity, padding of zeros."""

from __future__ import annotations

import ctypes

import pytest

from csbs.blobstore.aligned import AlignedBuffer
from csbs.fileio.direct import ALIGNMENT, padded


def test_the_memory_starts_on_a_page_and_holds_the_padding() -> None:
    buffer = AlignedBuffer(3 * ALIGNMENT + 1)
    address = ctypes.addressof(ctypes.c_char.from_buffer(buffer.memory))
    assert address % ALIGNMENT == 0
    assert len(buffer.memory) == 4 * ALIGNMENT
    assert padded(0) == 0 and padded(1) == ALIGNMENT and padded(ALIGNMENT) == ALIGNMENT


def test_a_blob_is_its_bytes_and_pads_with_zeros() -> None:
    buffer = AlignedBuffer(ALIGNMENT + 10)
    buffer.memory[:] = b"\xff" * len(buffer.memory)
    blob = buffer.blob(5)
    assert len(blob) == 5 and bytes(blob) == b"\xff" * 5
    with blob.padded_view() as view:
        assert len(view) == ALIGNMENT
        assert bytes(view) == b"\xff" * 5 + bytes(ALIGNMENT - 5)
    with blob.view() as view:
        assert bytes(view) == b"\xff" * 5


@pytest.mark.parametrize("length", [-1, ALIGNMENT + 11])
def test_a_blob_must_fit(length: int) -> None:
    with pytest.raises(ValueError):
        AlignedBuffer(ALIGNMENT + 10).blob(length)
