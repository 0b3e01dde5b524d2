"""Label Studio's brush masks: its ``"format": "rle"`` run-length encoding, both ways.

Label Studio keeps a ``brushlabels`` region as the RGBA pixels of the whole image
(row-major, 4 bytes a pixel, the alpha byte the mask) packed by thi.ng's ``rle-pack``
and sent as a list of byte values (``"rle": [...]``). The bit layout, read MSB first:

- a header: the number of values ``num`` (32 bits; 4 x height x width), the word size
  minus one (5 bits), and four run-length field sizes minus one (4 bits each);
- then blocks until ``num`` values are out: a flag bit (1: a repeat, 0: literals), the
  index of the field size (2 bits), the run length minus one in that many bits, then one
  word (a repeat: the value ``length`` times) or ``length`` words (literals).

``encode`` writes a mask as Label Studio's own converter (``label_studio_sdk.converter.brush.
mask2rle`` of ``mask * 255``) writes it, byte for byte: words of 8 bits, field sizes 3, 4, 8
and 16, every pixel 255 in all four channels inside the mask and 0 outside. ``decode`` reads
any word and field sizes (what the editor draws) and takes a pixel as inside when its alpha
is not 0, as the SDK's brush-to-COCO converter does. The SDK itself pulls opencv and pandas,
so it is not a dependency of the app; tests/test_brush.py checks this codec against it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mining.core import masks
from mining.core.masks import Rle

_SIZES = (3, 4, 8, 16)  # the run-length field sizes the encoder writes (Label Studio's own)
_LONGEST = 1 << 16  # the longest run one block holds (16 bits of length - 1)


def encode(mask: np.ndarray) -> list[int]:
    """A ``(h, w)`` mask (nonzero: inside) as Label Studio's brush ``rle`` byte values."""
    flat = (np.asarray(mask).reshape(-1) != 0).astype(np.uint8) * 255
    num = 4 * flat.size
    if not 0 < num < 1 << 32:
        raise ValueError(f"a brush mask holds 1 to {(1 << 30) - 1} pixels, not {flat.size}")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate(([0], change))
    lengths = np.diff(np.concatenate((starts, [flat.size]))) * 4  # each pixel is four equal bytes
    header = f"{num:032b}{8 - 1:05b}" + "".join(f"{s - 1:04b}" for s in _SIZES)
    bits = [header]
    for length, value in zip(lengths.tolist(), flat[starts].tolist()):
        while length > _LONGEST:
            bits.append(f"111{_LONGEST - 1:016b}{value:08b}")
            length -= _LONGEST
        index = next(k for k, size in enumerate(_SIZES) if length <= 1 << size)
        bits.append(f"1{index:02b}{length - 1:0{_SIZES[index]}b}{value:08b}")
    text = "".join(bits)
    text += "0" * (8 - len(text) % 8)  # as the SDK pads: 1 to 8 zero bits, never none
    return list(int(text, 2).to_bytes(len(text) // 8, "big"))


class _Bits:
    """Reads unsigned fields, MSB first, from a byte string; ``None`` past its end."""

    def __init__(self, data: np.ndarray):
        self.bits = np.unpackbits(data)
        self.at = 0

    def read(self, size: int) -> int | None:
        found = self.words(1, size)
        return None if found is None else int(found[0])

    def words(self, count: int, size: int) -> np.ndarray | None:
        end = self.at + count * size
        if end > self.bits.size:
            return None
        block = self.bits[self.at:end].reshape(count, size).astype(np.int64)
        self.at = end
        return block @ (1 << np.arange(size - 1, -1, -1, dtype=np.int64))


def to_coco(value: dict[str, Any], height: int | None, width: int | None) -> Rle | str:
    """A brush region (``{"format": "rle", "rle": [...], "size": [h, w]}``, its size the task's
    original_height and original_width) as a COCO RLE of the lake's ``height`` x ``width``
    image; or why not. The sizes are checked before anything is decoded."""
    if not height or not width:
        return "the image's size is unknown (registered without one): its mask cannot be checked"
    if value.get("size") != [height, width]:
        return (f"brush original_height x original_width {value.get('size')} is not the image's "
                f"[height, width] [{height}, {width}]")
    mask = decode(value.get("rle"), height, width)
    return mask if isinstance(mask, str) else masks.encode(mask)


def decode(rle: Any, height: int, width: int) -> np.ndarray | str:
    """Label Studio's brush ``rle`` of a ``height`` x ``width`` image as a ``(h, w)`` uint8
    mask of 0/1 (alpha not 0); or why it is not one."""
    data = _bytes(rle)
    if isinstance(data, str):
        return data
    bits = _Bits(data)
    num, word = bits.read(32), bits.read(5)
    sizes = [bits.read(4) for _ in range(4)]
    if word is None or None in sizes:
        return "brush rle is shorter than its header"
    if num != 4 * height * width:
        return f"brush rle holds {num} values, not the 4 x {height} x {width} of its original_height x original_width"
    out = _runs(bits, num, word + 1, [s + 1 for s in sizes])
    if isinstance(out, str):
        return out
    return (out.reshape(height, width, 4)[:, :, 3] != 0).astype(np.uint8)


def _runs(bits: _Bits, num: int, word: int, sizes: list[int]) -> np.ndarray | str:
    out = np.zeros(num, np.uint8)
    i = 0
    while i < num:
        repeat, index = bits.read(1), bits.read(2)
        length = None if index is None else bits.read(sizes[index])
        if length is None:
            return f"brush rle ends after {i} of its {num} values"
        j = i + 1 + length
        if j > num:
            return f"brush rle runs past its {num} values"
        values = bits.words(1 if repeat else j - i, word)
        if values is None:
            return f"brush rle ends after {i} of its {num} values"
        out[i:j] = np.minimum(values, 255)
        i = j
    return out


def _bytes(rle: Any) -> np.ndarray | str:
    if not isinstance(rle, Sequence) or isinstance(rle, str | bytes) or not rle:
        return "brush rle must be a list of byte values (0 to 255)"
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 256 for v in rle):
        return "brush rle must be a list of byte values (0 to 255)"
    return np.asarray(rle, np.uint8)
