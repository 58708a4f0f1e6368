"""A corpus of hostile and awkward image files, generated in code (nothing is downloaded).

``hostile_corpus()`` returns every entry with the outcome the intake must produce:
``expected_reason is None`` means the file must be accepted, otherwise it must be rejected with
that ``MediaRejected.reason``. The limits the expectations assume are ``CORPUS_LIMITS_MB`` and
``CORPUS_MAX_PIXELS`` (the production defaults). Entries that must be accepted carry
``secret_markers``: byte strings hidden in metadata or trailing payload that must not survive.
Unit and end-to-end tests import this module.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

from PIL import Image

CORPUS_LIMITS_MB = 20
CORPUS_MAX_PIXELS = 40_000_000
MEBIBYTE = 1024 * 1024

SECRET = b"SECRET-GPS-55.7558N-37.6173E"
SCRIPT = b"<script>alert(document.cookie)</script>"

ORIENTATION = 0x0112
IMAGE_DESCRIPTION = 0x010E
ARTIST = 0x013B
MAKE = 0x010F


@dataclass(frozen=True)
class HostileFile:
    name: str
    data: bytes = field(repr=False)
    claimed_mime: str
    filename: str
    expected_reason: str | None
    secret_markers: tuple[bytes, ...] = ()
    source_size: tuple[int, int] | None = None
    expected_size: tuple[int, int] | None = None

    @property
    def accepted(self) -> bool:
        return self.expected_reason is None


# --- building blocks -----------------------------------------------------------------------


def _save(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def _gradient(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """A smooth picture (fast to make, compresses like a photo, decodes deterministically)."""
    horizontal = Image.linear_gradient("L").resize((width, height))
    vertical = horizontal.transpose(Image.Transpose.ROTATE_90).resize((width, height))
    inverted = Image.eval(horizontal, lambda value: 255 - value)
    return Image.merge("RGB", (horizontal, vertical, inverted)).convert(mode)


def _translucent(width: int, height: int) -> Image.Image:
    """A gradient whose alpha fades from transparent to opaque."""
    image = _gradient(width, height, "RGBA")
    image.putalpha(Image.linear_gradient("L").resize((width, height)))
    return image


def _noise(width: int, height: int) -> Image.Image:
    return Image.effect_noise((width, height), 64).convert("RGB")


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_ihdr(width: int, height: int, bit_depth: int = 8, colour_type: int = 2) -> bytes:
    return _png_chunk(
        b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    )


def png_header_only(width: int, height: int) -> bytes:
    """Signature, IHDR and IEND: 45 bytes that claim any size."""
    return PNG_SIGNATURE + _png_ihdr(width, height) + _png_chunk(b"IEND", b"")


def png_zlib_bomb(width: int, height: int) -> bytes:
    """A real greyscale PNG of zeros: tiny on disk, width*height bytes once decoded."""
    compressor = zlib.compressobj(9)
    row = bytes(width + 1)
    parts = [compressor.compress(row) for _ in range(height)]
    parts.append(compressor.flush())
    idat = b"".join(parts)
    return (
        PNG_SIGNATURE
        + _png_ihdr(width, height, colour_type=0)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks = []
    offset = len(PNG_SIGNATURE)
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        chunks.append((kind, data[offset + 8 : offset + 8 + length]))
        offset += 12 + length
    return chunks


def _png_insert_before_idat(data: bytes, *extra: bytes) -> bytes:
    index = data.index(b"IDAT") - 4
    return data[:index] + b"".join(extra) + data[index:]


def _png_with_bad_idat_crc(data: bytes) -> bytes:
    index = data.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", data[index : index + 4])
    crc_at = index + 8 + length
    broken_crc = bytes(byte ^ 0xFF for byte in data[crc_at : crc_at + 4])
    return data[:crc_at] + broken_crc + data[crc_at + 4 :]


def _jpeg_set_sof_size(data: bytes, width: int, height: int) -> bytes:
    """Rewrite the frame header (SOF0) to claim another size; the scan data stays small."""
    index = data.index(b"\xff\xc0")
    patched = bytearray(data)
    patched[index + 5 : index + 9] = struct.pack(">HH", height, width)
    return bytes(patched)


def _jpeg_with_segments(data: bytes, segments: list[bytes]) -> bytes:
    """Insert raw marker segments right after SOI."""
    return data[:2] + b"".join(segments) + data[2:]


def _com_segment(payload: bytes) -> bytes:
    return b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload


def jpeg_padded_to(total_size: int) -> bytes:
    """A valid small JPEG grown to ``total_size`` bytes with comment (COM) segments."""
    base = _save(_gradient(64, 48), "JPEG", quality=90)
    chunk = _com_segment(b"P" * 65533)
    missing = total_size - len(base)
    count, rest = divmod(missing, len(chunk))
    segments = [chunk] * count
    if rest:
        segments.append(_com_segment(b"P" * max(rest - 4, 0)))
    padded = _jpeg_with_segments(base, segments)
    return padded + bytes(total_size - len(padded)) if len(padded) < total_size else padded


def _exif(orientation: int | None = None, description: bytes = SECRET) -> Image.Exif:
    exif = Image.Exif()
    exif[MAKE] = "HostileCam"
    exif[ARTIST] = SECRET.decode()
    exif[IMAGE_DESCRIPTION] = description.decode()
    if orientation is not None:
        exif[ORIENTATION] = orientation
    return exif


def _oriented_source() -> Image.Image:
    """40x20: the left column red, the rest blue (orientation 6 turns the red column to the top)."""
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 4, 20))
    return image


def _gif_bytes(screen: tuple[int, int], frames: list[tuple[int, int]]) -> bytes:
    """A hand-made GIF: logical screen size, then image descriptors of the given sizes, each with
    a one-pixel LZW stream (enough for the header parser, far too little for the frame)."""
    header = b"GIF89a" + struct.pack("<HHBBB", screen[0], screen[1], 0x80, 0, 0)
    palette = b"\x00\x00\x00\xff\xff\xff"
    body = b""
    for width, height in frames:
        body += b"\x21\xf9\x04\x00\x0a\x00\x00\x00"  # graphic control: 100 ms delay
        body += b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
        body += b"\x02\x02\x44\x01\x00"  # LZW min code size 2, one data block, terminator
    return header + palette + body + b"\x3b"


def _animated_gif() -> bytes:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (16, 16), colour) for colour in colours]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)


def _gif_javascript_polyglot(height: bytes) -> bytes:
    """GIFAR-style: the width bytes open a JavaScript comment that closes after the trailer.
    With a small height it is a real one-pixel GIF; with ``*/`` as height it claims 130 MP."""
    screen = b"/*" + height + b"\x80\x00\x00"
    palette = b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return b"GIF89a" + screen + palette + frame + b"\x3b" + b"*/=1;" + SCRIPT + b"//"


def _animated_png() -> bytes:
    frames = [Image.new("RGBA", (16, 16), (colour, 0, 0, 255)) for colour in (10, 200)]
    return _save(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=80)


def _animated_webp() -> bytes:
    frames = [Image.new("RGB", (16, 16), (0, colour, 0)) for colour in (10, 200)]
    return _save(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=80)


def _webp_with_broken_frame_header() -> bytes:
    data = bytearray(_save(_gradient(32, 32), "WEBP", quality=80))
    start_code = data.index(b"\x9d\x01\x2a")
    data[start_code : start_code + 3] = b"\x00\x00\x00"
    return bytes(data)


def _mpo() -> bytes:
    """A JPEG carrying a second image (MPO), like phone photos with a depth or gain map."""
    first = _gradient(48, 32)
    second = Image.new("RGB", (48, 32), (9, 9, 9))
    return _save(first, "MPO", save_all=True, append_images=[second], quality=90)


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("payload.js", SCRIPT)
    return buffer.getvalue()


def _minimal_pdf() -> bytes:
    return (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
        b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
    )


def _svg() -> bytes:
    return (
        b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" '
        b'height="10"><script>alert(1)</script><rect width="10" height="10"/></svg>\n'
    )


def _palette_with_transparency() -> bytes:
    image = Image.new("P", (8, 8), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * (254 * 3))
    image.paste(1, (0, 0, 4, 8))
    return _save(image, "PNG", transparency=0)


def _grey_with_transparent_colour() -> bytes:
    """Greyscale PNG whose colour 7 is transparent (a tRNS colour key, not an alpha channel)."""
    image = Image.new("L", (8, 8), 7)
    image.paste(200, (0, 0, 4, 8))
    return _save(image, "PNG", transparency=7)


def _png_with_metadata() -> bytes:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Comment", SECRET.decode())
    info.add_itxt("XML:com.adobe.xmp", SECRET.decode(), zip=True)
    return _save(_gradient(24, 24), "PNG", pnginfo=info, exif=_exif())


def _png_text_bomb() -> bytes:
    """A valid PNG with a compressed text chunk that inflates to 8 MB."""
    payload = b"Comment\x00\x00" + zlib.compress(bytes(8 * MEBIBYTE), 9)
    base = _save(_gradient(8, 8), "PNG")
    return _png_insert_before_idat(base, _png_chunk(b"zTXt", payload))


def _sixteen_bit_grey() -> bytes:
    image = Image.new("I;16", (16, 16), 0x8000)
    return _save(image, "PNG")


def _jpeg_with_garbage_exif() -> bytes:
    base = _save(_gradient(32, 24), "JPEG", quality=90)
    garbage = b"Exif\x00\x00MM\x00\x2a\xff\xff\xff\xf0" + SECRET + b"\x00" * 32
    app1 = b"\xff\xe1" + struct.pack(">H", len(garbage) + 2) + garbage
    return _jpeg_with_segments(base, [app1])


# --- the corpus ----------------------------------------------------------------------------

Builder = Callable[[], HostileFile]


def _rejected(
    name: str, data: bytes, reason: str, *, mime: str = "image/jpeg", filename: str = "photo.jpg"
) -> HostileFile:
    return HostileFile(name, data, mime, filename, reason)


def _accepted(
    name: str,
    data: bytes,
    *,
    mime: str,
    filename: str,
    markers: tuple[bytes, ...] = (),
    source_size: tuple[int, int] | None = None,
    expected_size: tuple[int, int] | None = None,
) -> HostileFile:
    return HostileFile(name, data, mime, filename, None, markers, source_size, expected_size)


def _size_and_type_entries() -> list[HostileFile]:
    over_limit = int((CORPUS_LIMITS_MB + 0.1) * MEBIBYTE)
    under_limit = int((CORPUS_LIMITS_MB - 0.1) * MEBIBYTE)
    tiny = Image.new("RGB", (4, 4), (200, 10, 10))
    return [
        _rejected("zero_bytes", b"", "empty"),
        _rejected("one_byte", b"\xff", "unsupported_type"),
        _rejected("document_20_1_mb", b"\xff\xd8\xff\xe0" + bytes(over_limit - 4), "too_large"),
        _accepted(
            "jpeg_19_9_mb_padded_with_comments",
            jpeg_padded_to(under_limit),
            mime="image/jpeg",
            filename="big.jpg",
            markers=(b"PPPPPPPPPPPPPPPP",),
            expected_size=(64, 48),
        ),
        _rejected("text_named_jpg", b"just some text, honest\n" * 10, "unsupported_type"),
        _rejected(
            "html_named_png",
            b"<!DOCTYPE html><html><body>" + SCRIPT + b"</body></html>",
            "unsupported_type",
            mime="image/png",
            filename="cat.png",
        ),
        _rejected("pdf", _minimal_pdf(), "unsupported_type", mime="application/pdf"),
        _rejected("zip", _zip_bytes(), "unsupported_type", mime="image/jpeg"),
        _rejected("svg_named_png", _svg(), "unsupported_type", mime="image/png", filename="x.png"),
        _rejected("bmp", _save(tiny, "BMP"), "unsupported_type", mime="image/bmp"),
        _rejected("tiff", _save(tiny, "TIFF"), "unsupported_type", mime="image/tiff"),
        _rejected("ico", _save(tiny, "ICO"), "unsupported_type", mime="image/x-icon"),
        _rejected("riff_wave", b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(32), "unsupported_type"),
        _rejected("jpeg_soi_only", b"\xff\xd8\xff", "corrupt"),
        _rejected("png_signature_only", PNG_SIGNATURE, "corrupt", mime="image/png"),
        _rejected("gif_signature_only", b"GIF89a", "corrupt", mime="image/gif"),
        _rejected("webp_riff_garbage", b"RIFF\x20\x00\x00\x00WEBP" + b"\x01" * 32, "corrupt"),
    ]


def _pixel_bomb_entries() -> list[HostileFile]:
    small_jpeg = _save(_gradient(16, 16), "JPEG")
    return [
        _rejected(
            "png_header_12000x12000",
            png_header_only(12000, 12000),
            "too_many_pixels",
            mime="image/png",
        ),
        _rejected(
            "png_header_50000x50000",
            png_header_only(50000, 50000),
            "too_many_pixels",
            mime="image/png",
        ),
        _rejected(
            "png_zlib_bomb_7000x6000",
            png_zlib_bomb(7000, 6000),
            "too_many_pixels",
            mime="image/png",
        ),
        _rejected(
            "jpeg_sof_65000x65000", _jpeg_set_sof_size(small_jpeg, 65000, 65000), "too_many_pixels"
        ),
        _rejected(
            "jpeg_sof_7000x7000", _jpeg_set_sof_size(small_jpeg, 7000, 7000), "too_many_pixels"
        ),
        _rejected(
            "gif_huge_logical_screen",
            _gif_bytes((65535, 65535), [(1, 1)]),
            "too_many_pixels",
            mime="image/gif",
        ),
        _rejected(
            "gif_huge_frame",
            _gif_bytes((10, 10), [(60000, 60000)]),
            "too_many_pixels",
            mime="image/gif",
        ),
        _rejected(
            "gif_frame_12000x12000",
            _gif_bytes((10, 10), [(12000, 12000)]),
            "too_many_pixels",
            mime="image/gif",
        ),
        _rejected(
            "gif_animated_huge_frames",
            _gif_bytes((60000, 60000), [(60000, 60000), (60000, 60000), (60000, 60000)]),
            "too_many_pixels",
            mime="image/gif",
        ),
        _rejected(
            "gif_animated_small_then_huge_frame",
            _gif_bytes((10, 10), [(1, 1), (60000, 60000)]),
            "animated",
            mime="image/gif",
        ),
        _rejected(
            "gif_javascript_polyglot_header",
            _gif_javascript_polyglot(b"*/"),
            "too_many_pixels",
            mime="image/gif",
            filename="x.gif",
        ),
        _rejected(
            "png_1x30000_thin",
            _save(Image.new("L", (1, 30000), 128), "PNG"),
            "bad_dimensions",
            mime="image/png",
            filename="strip.png",
        ),
    ]


def _broken_entries() -> list[HostileFile]:
    noise_jpeg = _save(_noise(96, 96), "JPEG", quality=90)
    noise_png = _save(_noise(96, 96), "PNG")
    zero_width = PNG_SIGNATURE + _png_ihdr(0, 10) + _png_chunk(b"IEND", b"")
    return [
        _rejected("jpeg_truncated", noise_jpeg[: len(noise_jpeg) // 2], "corrupt"),
        _rejected("png_truncated", noise_png[: len(noise_png) // 2], "corrupt", mime="image/png"),
        _rejected("png_bad_idat_crc", _png_with_bad_idat_crc(noise_png), "corrupt"),
        _rejected("png_zero_width", zero_width, "corrupt", mime="image/png"),
        _rejected("png_ztxt_text_bomb", _png_text_bomb(), "corrupt", mime="image/png"),
        _rejected(
            "webp_corrupted_frame_chunk",
            _webp_with_broken_frame_header(),
            "corrupt",
            mime="image/webp",
            filename="x.webp",
        ),
        _rejected("gif_truncated", _animated_gif()[:30], "corrupt", mime="image/gif"),
        _rejected("gif_animated", _animated_gif(), "animated", mime="image/gif", filename="a.gif"),
        _rejected("png_animated_apng", _animated_png(), "animated", mime="image/png"),
        _rejected("webp_animated", _animated_webp(), "animated", mime="image/webp"),
    ]


def _accepted_entries() -> list[HostileFile]:
    gradient_png = _save(_gradient(64, 40), "PNG")
    gif_with_script = _save(Image.new("P", (12, 12), 1), "GIF") + SCRIPT
    jpeg_zip = _save(_gradient(40, 30), "JPEG") + _zip_bytes()
    big_exif = _exif(orientation=6, description=SECRET + b"X" * 60000)
    return [
        _accepted(
            "gif_javascript_polyglot",
            _gif_javascript_polyglot(b"\x0a\x00"),
            mime="image/gif",
            filename="x.gif",
            markers=(SCRIPT,),
            expected_size=(0x2A2F, 10),
        ),
        _accepted(
            "png_1x1",
            _save(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG"),
            mime="image/png",
            filename="dot.png",
            expected_size=(1, 1),
        ),
        _accepted(
            "png_wrong_claimed_mime",
            gradient_png,
            mime="image/jpeg",
            filename="photo.jpg",
            expected_size=(64, 40),
        ),
        _accepted(
            "jpeg_named_gif",
            _save(_gradient(30, 20), "JPEG"),
            mime="image/gif",
            filename="x.gif",
            expected_size=(30, 20),
        ),
        _accepted(
            "gif_static_with_trailing_javascript",
            gif_with_script,
            mime="image/gif",
            filename="x.gif",
            markers=(SCRIPT,),
            expected_size=(12, 12),
        ),
        _accepted(
            "jpeg_with_zip_appended",
            jpeg_zip,
            mime="image/jpeg",
            filename="x.jpg",
            markers=(b"PK\x03\x04", SCRIPT),
            expected_size=(40, 30),
        ),
        _accepted(
            "jpeg_huge_exif_with_orientation",
            _save(_oriented_source(), "JPEG", exif=big_exif, quality=95),
            mime="image/jpeg",
            filename="huge_exif.jpg",
            markers=(SECRET, b"HostileCam"),
            source_size=(40, 20),
            expected_size=(20, 40),
        ),
        _accepted(
            "jpeg_exif_rotated",
            _save(_oriented_source(), "JPEG", exif=_exif(6), quality=95),
            mime="image/jpeg",
            filename="rotated.jpg",
            markers=(SECRET,),
            source_size=(40, 20),
            expected_size=(20, 40),
        ),
        _accepted(
            "jpeg_garbage_exif",
            _jpeg_with_garbage_exif(),
            mime="image/jpeg",
            filename="x.jpg",
            markers=(SECRET,),
            expected_size=(32, 24),
        ),
        _accepted(
            "jpeg_cmyk",
            _save(_gradient(32, 32, "CMYK"), "JPEG"),
            mime="image/jpeg",
            filename="print.jpg",
            expected_size=(32, 32),
        ),
        _accepted(
            "jpeg_greyscale",
            _save(_gradient(32, 32, "L"), "JPEG"),
            mime="image/jpeg",
            filename="grey.jpg",
            expected_size=(32, 32),
        ),
        _accepted(
            "jpeg_mpo_two_frames",
            _mpo(),
            mime="image/jpeg",
            filename="phone.jpg",
            expected_size=(48, 32),
        ),
        _accepted(
            "png_16_bit_grey",
            _sixteen_bit_grey(),
            mime="image/png",
            filename="16.png",
            expected_size=(16, 16),
        ),
        _accepted(
            "png_palette_transparency",
            _palette_with_transparency(),
            mime="image/png",
            filename="p.png",
            expected_size=(8, 8),
        ),
        _accepted(
            "png_grey_transparent_colour_key",
            _grey_with_transparent_colour(),
            mime="image/png",
            filename="key.png",
            expected_size=(8, 8),
        ),
        _accepted(
            "png_la",
            _save(_translucent(16, 16).convert("LA"), "PNG"),
            mime="image/png",
            filename="la.png",
            expected_size=(16, 16),
        ),
        _accepted(
            "png_rgba_fully_opaque",
            _save(_gradient(16, 16, "RGBA"), "PNG"),
            mime="image/png",
            filename="opaque.png",
            expected_size=(16, 16),
        ),
        _accepted(
            "png_1_bit",
            _save(Image.new("1", (16, 16), 1), "PNG"),
            mime="image/png",
            filename="bw.png",
            expected_size=(16, 16),
        ),
        _accepted(
            "png_metadata_text_xmp_exif",
            _png_with_metadata(),
            mime="image/png",
            filename="meta.png",
            markers=(SECRET,),
            expected_size=(24, 24),
        ),
        _accepted(
            "png_1x8000_thin",
            _save(Image.new("L", (1, 8000), 90), "PNG"),
            mime="image/png",
            filename="thin.png",
            expected_size=(1, 8000),
        ),
        _accepted(
            "webp_rgba",
            _save(_translucent(32, 32), "WEBP", quality=90),
            mime="image/webp",
            filename="x.webp",
            expected_size=(32, 32),
        ),
        _accepted(
            "webp_with_exif",
            _save(_gradient(32, 32), "WEBP", exif=_exif()),
            mime="image/webp",
            filename="x.webp",
            markers=(SECRET,),
            expected_size=(32, 32),
        ),
        _accepted(
            "jpeg_3000x2000",
            _save(_gradient(3000, 2000), "JPEG", quality=90),
            mime="image/jpeg",
            filename="large.jpg",
            expected_size=(3000, 2000),
        ),
    ]


@cache
def _cached_corpus() -> tuple[HostileFile, ...]:
    return (
        *_size_and_type_entries(),
        *_pixel_bomb_entries(),
        *_broken_entries(),
        *_accepted_entries(),
    )


def hostile_corpus() -> list[HostileFile]:
    """Every hostile entry (built once per process, a fraction of a second)."""
    return list(_cached_corpus())


def hostile_file(name: str) -> HostileFile:
    for entry in _cached_corpus():
        if entry.name == name:
            return entry
    raise KeyError(name)
