"""Decoding untrusted image bytes with Pillow: bounded, upright, metadata-free, with a preview.

Imported with the first image, in a worker thread (see ``bot.services.media.ImageProcessor``):
nothing else decodes images. Only the format the magic bytes chose is ever handed to a decoder,
the pixel count is checked from the header before any pixel is decoded, and the stored original
is a fresh re-encode, so no EXIF, GPS, XMP, ICC, comments or trailing payload survive.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Final

import structlog
from PIL import Image

from bot.services.media import (
    ANIMATABLE_FORMATS,
    JPEG_QUALITY,
    MIME_BY_FORMAT,
    PHOTO_JPEG_QUALITY,
    PREVIEW_JPEG_QUALITY,
    PREVIEW_MAX_SIDE,
    WEBP_QUALITY,
    ImageLimits,
    MediaRejected,
    OriginalImage,
    PreparedImage,
    check_envelope,
    photo_reduction,
    rejected_animated,
    rejected_bad_dimensions,
    rejected_corrupt,
    rejected_too_many_pixels,
)

log = structlog.get_logger(__name__)

_ORIENTATION_TAG: Final = 0x0112
_TRANSPOSE_BY_ORIENTATION: Final = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def effective_max_pixels(limits: ImageLimits) -> int:
    """Our pixel cap, never above Pillow's own bomb threshold, so a bomb warning is a reject."""
    pillow_cap = Image.MAX_IMAGE_PIXELS
    return limits.max_pixels if pillow_cap is None else min(limits.max_pixels, pillow_cap)


def _check_dimensions(size: tuple[int, int], limits: ImageLimits) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise rejected_corrupt()
    max_pixels = effective_max_pixels(limits)
    if width * height > max_pixels:
        raise rejected_too_many_pixels(max_pixels, size)
    if max(width, height) > limits.max_side:
        raise rejected_bad_dimensions(size, limits.max_side)


@contextmanager
def _decoder_errors_as_rejections(max_pixels: int) -> Iterator[None]:
    """Any failure inside Pillow on untrusted bytes is the image's fault, never a crash."""
    try:
        yield
    except MediaRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise rejected_too_many_pixels(max_pixels, None) from exc
    except Exception as exc:
        log.info("image_decode_failed", error_type=type(exc).__name__)
        raise rejected_corrupt() from exc


def _open(data: bytes, image_format: str) -> Image.Image:
    """Open with the one decoder the magic bytes chose; reads the header only."""
    return Image.open(io.BytesIO(data), formats=[image_format])


def _inspect(data: bytes, image_format: str, limits: ImageLimits) -> None:
    """Header checks (pixels, sides, animation) and a structural verify, without decoding."""
    with _open(data, image_format) as image:
        _check_dimensions(image.size, limits)
        if image_format in ANIMATABLE_FORMATS and getattr(image, "is_animated", False):
            raise rejected_animated()
        image.verify()


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation, or 1 when there is none or it cannot be read."""
    try:
        value = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception as exc:  # broken EXIF in an otherwise good photo: show it unrotated
        log.info("image_orientation_unreadable", error_type=type(exc).__name__)
        return 1
    return value if isinstance(value, int) else 1


def _upright(image: Image.Image) -> Image.Image:
    method = _TRANSPOSE_BY_ORIENTATION.get(_orientation(image))
    return image if method is None else image.transpose(method)


def _has_transparency(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _sixteen_bit_to_grey(image: Image.Image) -> Image.Image:
    """Scale 16-bit grey to 8 bits (a plain convert would clip everything above 255 to white)."""
    return image.convert("I").point(lambda value: value / 256).convert("L")


def _fully_opaque(image: Image.Image) -> bool:
    lowest_alpha, _ = image.getchannel("A").getextrema()
    return lowest_alpha == 255


def _normalized(image: Image.Image) -> Image.Image:
    """One of L, RGB or RGBA: what JPEG, PNG, WebP and Claude all take."""
    mode = image.mode
    if mode == "RGBA" and _fully_opaque(image):
        return image.convert("RGB")
    if mode in ("L", "RGB") and "transparency" in image.info:
        return _normalized(image.convert("RGBA"))
    if mode in ("L", "RGB", "RGBA"):
        return image
    if mode == "1":
        return image.convert("L")
    if mode == "I" or mode.startswith("I;16"):
        return _sixteen_bit_to_grey(image)
    if _has_transparency(image):
        return _normalized(image.convert("RGBA"))
    return image.convert("RGB")


@dataclass(frozen=True, slots=True)
class _Decoded:
    """The decoded first frame, and whether its pixels are exactly the stored ones (no rotation,
    no mode change, no transparency key): then a PNG's own image data can be kept."""

    image: Image.Image
    pixels_as_stored: bool


def _decode(data: bytes, image_format: str) -> _Decoded:
    """Fully decode the first frame, upright, in a plain mode, with no metadata attached.
    Each step replaces the previous image, so at most two full-size copies exist at once."""
    raw = _open(data, image_format)
    raw.load()
    raw_mode, keyed = raw.mode, "transparency" in raw.info
    image = _normalized(_upright(raw))
    as_stored = image is raw and raw_mode in ("L", "RGB", "RGBA") and not keyed
    image.info = {}
    return _Decoded(image, as_stored)


def _encode(image: Image.Image, image_format: str, **options: object) -> bytes:
    """The encoded image, written to an anonymous file rather than a BytesIO: Pillow encodes into
    a file descriptor without holding the GIL, while into a BytesIO it holds it for the whole
    encode (about 10 ms for a 2752 px JPEG photo), and the bot's event loop, another person's
    turn, waits that long."""
    with _scratch_file() as file:
        image.save(file, format=image_format, **options)
        file.seek(0)
        return file.read()


@contextmanager
def _scratch_file() -> Iterator[BinaryIO]:
    """An unnamed file in memory (memfd) where the system has them, else a temporary file."""
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is None:
        with tempfile.TemporaryFile() as file:
            yield file
        return
    with os.fdopen(memfd_create("image-encode", os.MFD_CLOEXEC), "w+b") as file:
        yield file


def _stored_format(image: Image.Image, source_format: str) -> str:
    if source_format == "JPEG" and image.mode in ("L", "RGB"):
        return "JPEG"
    if source_format == "WEBP":
        return "WEBP"
    return "PNG"


def _encode_original(image: Image.Image, stored_format: str) -> bytes:
    if stored_format == "JPEG":
        return _encode(image, "JPEG", quality=JPEG_QUALITY, optimize=True)
    if stored_format == "WEBP":
        return _encode(image, "WEBP", quality=WEBP_QUALITY)
    return _encode(image, "PNG", optimize=False)


def _preview_size(size: tuple[int, int]) -> tuple[int, int]:
    width, height = size
    scale = min(1.0, PREVIEW_MAX_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _preview(
    image: Image.Image, original: bytes, stored_format: str
) -> tuple[bytes, str, tuple[int, int]]:
    """At most PREVIEW_MAX_SIDE on the long edge: JPEG when opaque, PNG when it has alpha."""
    has_alpha = image.mode == "RGBA"
    preview_format = "PNG" if has_alpha else "JPEG"
    fits = max(image.size) <= PREVIEW_MAX_SIDE
    if fits and stored_format == preview_format:
        return original, MIME_BY_FORMAT[preview_format], image.size
    small = image.resize(_preview_size(image.size), Image.Resampling.LANCZOS, reducing_gap=2.0)
    if has_alpha:
        return _encode(small, "PNG"), "image/png", small.size
    return _encode(small, "JPEG", quality=PREVIEW_JPEG_QUALITY), "image/jpeg", small.size


def _on_white(image: Image.Image) -> Image.Image:
    """An opaque copy: a Telegram photo has no transparency (JPEG), so it goes on white."""
    if image.mode != "RGBA":
        return image
    background = Image.new("RGB", image.size, (255, 255, 255))
    background.paste(image, mask=image.getchannel("A"))
    return background


def _photo_preview(image: Image.Image, factor: int) -> tuple[Image.Image, bytes]:
    """The JPEG sent as the Telegram photo of an image too large to go as one as it is: the
    image shrunk by a whole `factor` (each block of pixels averaged)."""
    small = image if factor == 1 else image.reduce(factor)
    return small, _encode(_on_white(small), "JPEG", quality=PHOTO_JPEG_QUALITY)


# The PNG chunks a picture needs; every other chunk (text, EXIF, XMP, ICC, time, private) goes.
_PNG_KEPT_CHUNKS: Final = frozenset({b"IHDR", b"PLTE", b"IDAT", b"IEND"})
_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"


def _png_critical_chunks(data: bytes) -> bytes | None:
    """The PNG with only IHDR, PLTE, IDAT and IEND, nothing after IEND; None when malformed.
    `data` itself (no copy) when it has nothing else."""
    if not data.startswith(_PNG_SIGNATURE):
        return None
    kept: list[bytes | memoryview] = [_PNG_SIGNATURE]
    dropped = False
    position = len(_PNG_SIGNATURE)
    while position + 12 <= len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8]
        end = position + 12 + length
        if end > len(data):
            return None
        if kind in _PNG_KEPT_CHUNKS:
            kept.append(memoryview(data)[position:end])
        else:
            dropped = True
        if kind == b"IEND":
            return data if not dropped and end == len(data) else b"".join(kept)
        position = end
    return None


def prepare_image(
    data: bytes, limits: ImageLimits, *, keep_png_stream: bool = False, photo: bool = False
) -> PreparedImage:
    """The whole pipeline, synchronously (CPU bound: call it from a worker thread).

    `keep_png_stream` (images from the image provider): a PNG whose pixels need no change keeps
    its own image data, with every metadata chunk and anything after IEND removed, instead of a
    full re-encode. Users' uploads are always re-encoded. `photo`: also make the JPEG to send as
    the Telegram photo when the original is too large to go as one (`photo_preview_size`)."""
    source_format = check_envelope(data, limits)
    with _decoder_errors_as_rejections(effective_max_pixels(limits)):
        _inspect(data, source_format, limits)
        decoded = _decode(data, source_format)
        image = decoded.image
        stored_format = _stored_format(image, source_format)
        original = None
        if keep_png_stream and decoded.pixels_as_stored and stored_format == source_format == "PNG":
            original = _png_critical_chunks(data)
        if original is None:
            original = _encode_original(image, stored_format)
        reduction = photo_reduction(*image.size, len(original)) if photo else None
        photo_bytes = None
        if reduction is not None:
            # The model's preview is made from the photo's smaller pixels: less work, same look.
            image, photo_bytes = _photo_preview(image, reduction)
        preview, preview_mime, preview_size = _preview(image, original, stored_format)
    return PreparedImage(
        original_image=OriginalImage.holding(original),
        original_mime=MIME_BY_FORMAT[stored_format],
        width=decoded.image.width,
        height=decoded.image.height,
        sha256=hashlib.sha256(original).hexdigest(),
        preview=preview,
        preview_mime=preview_mime,
        preview_width=preview_size[0],
        preview_height=preview_size[1],
        format=stored_format,
        source_format=source_format,
        photo=photo_bytes,
    )
