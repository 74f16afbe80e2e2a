"""The pixel size an image file declares in its header, read without decoding it.

    from ssd_edge.runtime.image_header import header_size

    size = header_size(data)        # (width, height), or None for a format not read here

OpenCV has no header-only API: `cv2.imdecode` allocates the whole image before it decodes
a pixel, so a 1 MB PNG that claims 20000 x 20000 pixels costs 1.2 GB. Reading the size
first lets a reader refuse such a file for what it claims. Formats read here: PNG (IHDR),
JPEG (the first SOFn frame header), BMP, WebP (VP8, VP8L, VP8X) and TIFF (the first IFD's
ImageWidth / ImageLength). `None` means the format is none of these or the header is cut
short; a caller that must bound memory then relies on OpenCV's own pixel limit
(OPENCV_IO_MAX_IMAGE_PIXELS). Pure Python over the first bytes; no OpenCV, no NumPy.
"""

from __future__ import annotations

import struct

# JPEG start-of-frame markers: C0..CF except DHT (C4), JPG (C8) and DAC (CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM, RSTn, SOI, EOI.
_STANDALONE = frozenset([0x01, *range(0xD0, 0xDA)])


def _png(data: bytes) -> tuple[int, int] | None:
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def _jpeg(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _STANDALONE:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if marker in _SOF_MARKERS:
            if i + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        if marker == 0xDA or length < 2:  # scan data before any frame header: not a usable file
            return None
        i += 2 + length
    return None


def _bmp(data: bytes) -> tuple[int, int] | None:
    if len(data) < 26:
        return None
    (header,) = struct.unpack("<I", data[14:18])
    if header == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return struct.unpack("<HH", data[18:22])
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)  # a negative height means top-down rows


def _webp(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        (bits,) = struct.unpack("<I", data[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    return None


def _tiff(data: bytes) -> tuple[int, int] | None:
    order = "<" if data[:2] == b"II" else ">"
    if len(data) < 8:
        return None
    (offset,) = struct.unpack(order + "I", data[4:8])
    if offset + 2 > len(data):
        return None
    (count,) = struct.unpack(order + "H", data[offset:offset + 2])
    found: dict[int, int] = {}
    for k in range(count):
        entry = offset + 2 + 12 * k
        if entry + 12 > len(data):
            return None
        tag, kind = struct.unpack(order + "HH", data[entry:entry + 4])
        if tag in (256, 257):
            if kind == 3:  # SHORT
                (value,) = struct.unpack(order + "H", data[entry + 8:entry + 10])
            elif kind == 4:  # LONG
                (value,) = struct.unpack(order + "I", data[entry + 8:entry + 12])
            else:
                return None
            found[tag] = value
            if len(found) == 2:
                return found[256], found[257]
    return None


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) the encoded image `data` declares, from its header alone; None when
    its format is not one read here (see the module docstring) or the header is cut short."""
    data = data if isinstance(data, bytes) else bytes(data)  # slices below copy only the bytes they read
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            return _png(data)
        if data[:3] == b"\xff\xd8\xff":
            return _jpeg(data)
        if data[:2] == b"BM":
            return _bmp(data)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp(data)
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff(data)
    except struct.error:  # a header cut short
        return None
    return None
