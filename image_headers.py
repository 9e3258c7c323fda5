"""What an image file's bytes say without decoding it: whether TensorFlow can decode it
(format by signature, truncation, unsupported BMP and WebP kinds), its size as shown and
its EXIF orientation. Only the first 2 KiB, the last 4 KiB and (JPEG) the segments before
the image data are read; data.check_images applies this to many files at once.
"""
import io
import os
import struct
import typing

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
_JPEG_SOI = b'\xff\xd8\xff'
_HEAD_BYTES = 2048  # enough for a BMP header with a 256-colour palette
# JPEG start-of-frame markers (they hold the size): C0-CF except DHT (C4), JPG (C8), DAC (CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_EXIF_ORIENTATION_TAG = 0x0112


class ImageInfo(typing.NamedTuple):
    """What the header check learns about one file, without decoding it."""
    problem: typing.Optional[str] = None  # why it cannot be decoded; None when it looks right
    size: typing.Optional[tuple] = None   # (width, height) as shown (after EXIF); None: unknown
    orientation: int = 1                  # EXIF orientation 1-8 (JPEG); 1: as stored


def inspect_file(path):
    """ImageInfo of one file from its first 2 KiB, last 4 KiB and (JPEG) its segments."""
    try:
        with open(path, 'rb') as f:
            head = f.read(_HEAD_BYTES)
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - 4096))
            problem = _header_problem(head, f.read(), size)
            if problem is None and head.startswith(_JPEG_SOI):
                jpeg_size, orientation = _jpeg_header(f, head)
                return ImageInfo(None, jpeg_size, orientation)
    except OSError as e:
        return ImageInfo(f'unreadable: {e.strerror}')
    return ImageInfo(problem, None if problem else _header_size(head))


def _header_problem(head, tail, size):
    """Why a file with this start, end and size cannot be decoded, or None."""
    if size == 0:
        return 'empty file'
    if head.startswith(_JPEG_SOI):
        # Entropy-coded data escapes 0xFF, so FF D9 (end of image) only appears as the marker.
        return None if b'\xff\xd9' in tail else 'truncated JPEG (no end marker)'
    if head.startswith(PNG_SIGNATURE):
        return None if b'IEND' in tail else 'truncated PNG (no IEND chunk)'
    if head[:6] in (b'GIF87a', b'GIF89a'):
        return None if tail.rstrip(b'\0').endswith(b';') else 'truncated GIF (no trailer)'
    if head.startswith(b'BM'):
        return _bmp_problem(head, size)
    if head[:4] == b'RIFF' and head[8:12] == b'WEBP':
        return _webp_problem(head, size)
    return 'not a JPEG, PNG, GIF, BMP or WebP file'


def _bmp_problem(head, size):
    """What tf.io.decode_image gets wrong with this BMP (it reads only uncompressed 24/32-bit
    pixels, and 8-bit ones as gray levels, ignoring the palette), or None."""
    if len(head) < 34:
        return 'truncated BMP header'
    data_offset, header_size = struct.unpack_from('<II', head, 10)
    width, height, _, bits, compression = struct.unpack_from('<iiHHI', head, 18)
    if compression != 0:
        return f'compressed BMP (compression type {compression}) is not supported'
    if bits == 8:
        palette = head[14 + header_size:data_offset]
        if palette != bytes(b for i in range(len(palette) // 4) for b in (i, i, i, 0)):
            return 'colour-palette BMP is not supported'
    elif bits not in (24, 32):
        return f'{bits}-bit BMP is not supported'
    row_bytes = (abs(width) * bits + 31) // 32 * 4
    if size < data_offset + row_bytes * abs(height):
        return 'truncated BMP (pixel data too short)'
    return None


def _webp_problem(head, size):
    """Truncation (the RIFF header gives the file size) or animation, else None."""
    if len(head) < 21:
        return 'truncated WebP header'
    if size < struct.unpack_from('<I', head, 4)[0] + 8:
        return 'truncated WebP (shorter than its RIFF size)'
    if head[12:16] == b'VP8X' and head[20] & 0x02:
        return 'animated WebP is not supported (TensorFlow cannot decode it safely)'
    return None


def _header_size(head):
    """(width, height) of a PNG, GIF, BMP or WebP from its first bytes, or None."""
    try:
        if head.startswith(PNG_SIGNATURE):
            return struct.unpack_from('>II', head, 16)  # IHDR
        if head[:6] in (b'GIF87a', b'GIF89a'):
            return struct.unpack_from('<HH', head, 6)  # logical screen: TF's frame size
        if head.startswith(b'BM'):
            width, height = struct.unpack_from('<ii', head, 18)
            return abs(width), abs(height)  # negative height: rows stored top-down
        if head[:4] == b'RIFF' and head[8:12] == b'WEBP':
            return _webp_size(head)
    except struct.error:  # a header shorter than its format's
        return None
    return None


def _webp_size(head):
    chunk = head[12:16]
    if chunk == b'VP8X':  # extended: 24-bit canvas width - 1 and height - 1
        return (int.from_bytes(head[24:27], 'little') + 1,
                int.from_bytes(head[27:30], 'little') + 1)
    if chunk == b'VP8 ':  # lossy: 14-bit sizes after the frame tag and start code
        width, height = struct.unpack_from('<HH', head, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b'VP8L':  # lossless: 14-bit width - 1 and height - 1 after the signature
        bits = int.from_bytes(head[21:25], 'little')
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _jpeg_header(f, head):
    """((width, height) as shown, EXIF orientation) of a JPEG; size None when not found.

    Walks the segments from the start: APP1 (EXIF) and SOF come before the image data,
    but ICC profiles, thumbnails or comments can push them past `head`, so further bytes
    are read from f as needed. Orientation 1 when there is no valid tag.
    """
    def read(offset, n):
        if offset + n <= len(head):
            return head[offset:offset + n]
        f.seek(offset)
        return f.read(n)

    orientation, pos = 1, 2
    while True:
        marker = read(pos, 4)
        if len(marker) < 4 or marker[0] != 0xFF or marker[1] in (0xD9, 0xDA):
            return None, orientation  # damaged, or image data without a frame header
        if marker[1] == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        length = int.from_bytes(marker[2:4], 'big')
        if marker[1] in _SOF_MARKERS:
            sof = read(pos + 5, 4)  # after length and sample precision: height, width
            if len(sof) < 4:
                return None, orientation
            height, width = struct.unpack('>HH', sof)
            return _shown_size((width, height), orientation), orientation
        if marker[1] == 0xE1 and orientation == 1:
            orientation = _exif_orientation(read, pos + 4, pos + 2 + length)
        pos += 2 + max(length, 2)


def _exif_orientation(read, start, end):
    """The IFD0 orientation tag of an APP1 payload at [start, end), 1 if absent/invalid."""
    if read(start, 6) != b'Exif\0\0':
        return 1  # another APP1 (XMP)
    tiff = start + 6
    header = read(tiff, 8)
    if len(header) < 8 or header[:2] not in (b'II', b'MM'):
        return 1
    order = '<' if header[:2] == b'II' else '>'
    ifd = tiff + struct.unpack_from(order + 'I', header, 4)[0]
    count = read(ifd, 2)
    if len(count) < 2 or ifd + 2 > end:
        return 1
    n = min(struct.unpack(order + 'H', count)[0], (end - ifd - 2) // 12)
    entries = read(ifd + 2, 12 * n)
    for i in range(len(entries) // 12):
        tag, kind = struct.unpack_from(order + 'HH', entries, 12 * i)
        if tag == _EXIF_ORIENTATION_TAG and kind == 3:  # SHORT, first in its value field
            value = struct.unpack_from(order + 'H', entries, 12 * i + 8)[0]
            return value if 1 <= value <= 8 else 1
    return 1


def _shown_size(size, orientation):
    # Orientations 5-8 turn the image by 90 degrees: width and height swap.
    return (size[1], size[0]) if orientation >= 5 else tuple(size)


def _stream_orientation(f):
    """EXIF orientation of the image in a binary file object (1 unless a tagged JPEG)."""
    head = f.read(_HEAD_BYTES)
    return _jpeg_header(f, head)[1] if head.startswith(_JPEG_SOI) else 1


def read_orientation(path_or_bytes):
    """EXIF orientation 1-8 of a file (path or encoded bytes); 1 when untagged or not JPEG."""
    if isinstance(path_or_bytes, bytes):
        return _stream_orientation(io.BytesIO(path_or_bytes))
    try:
        with open(path_or_bytes, 'rb') as f:
            return _stream_orientation(f)
    except OSError:
        return 1  # reading the image itself then fails with TensorFlow's error
