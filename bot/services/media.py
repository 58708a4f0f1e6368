"""Image intake safety: magic-byte sniffing, bounded decoding, orientation, metadata stripping,
previews for Claude, and the Telegram photo-or-document decision.

Every image that enters the bot (a user's upload or the image model's output) goes through
``ImageProcessor``: nothing else decodes untrusted bytes. Only the four formats we accept are ever
handed to a decoder, the pixel count is checked from the header before any pixel is decoded, and
the stored original is a fresh re-encode, so no EXIF, GPS, XMP, ICC, comments or trailing payload
survive.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final

import structlog
from PIL import Image

log = structlog.get_logger(__name__)

MEBIBYTE: Final = 1024 * 1024
PREVIEW_MAX_SIDE: Final = 1568
DEFAULT_MAX_SIDE: Final = 16384
JPEG_QUALITY: Final = 92
PREVIEW_JPEG_QUALITY: Final = 85
WEBP_QUALITY: Final = 92

MIME_BY_FORMAT: Final = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
}
EXTENSION_BY_FORMAT: Final = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif"}

# Formats whose extra frames are an animation. A JPEG with extra frames is an MPO (phone photos
# carrying a depth or gain map): the first frame is the photo, so those are accepted.
_ANIMATABLE_FORMATS: Final = frozenset({"PNG", "WEBP", "GIF"})
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


def sniff_image_type(data: bytes) -> str | None:
    """The accepted format ("JPEG", "PNG", "WEBP", "GIF") from magic bytes only, else None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if len(data) >= 12 and data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WEBP"
    return None


class MediaRejected(Exception):
    """An image we will not accept; ``user_message`` is safe to show in a chat as is."""

    def __init__(self, reason: str, user_message: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.user_message = user_message


def _megabytes(size_bytes: int) -> str:
    """Size in MB (MiB, as Telegram counts), rounded up to one decimal, without a trailing .0."""
    tenths = math.ceil(size_bytes * 10 / MEBIBYTE)
    return str(tenths // 10) if tenths % 10 == 0 else f"{tenths / 10:.1f}"


def _megapixels(pixels: int) -> str:
    value = pixels / 1_000_000
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def rejected_empty() -> MediaRejected:
    return MediaRejected("empty", "This file is empty. Please send the image again.")


def rejected_too_large(size_bytes: int, max_bytes: int) -> MediaRejected:
    return MediaRejected(
        "too_large",
        f"This file is {_megabytes(size_bytes)} MB; I can take images up to "
        f"{_megabytes(max_bytes)} MB.",
    )


def rejected_unsupported_type() -> MediaRejected:
    return MediaRejected(
        "unsupported_type",
        "I can read JPEG, PNG, WebP and GIF images; this file is not one of them.",
    )


def rejected_corrupt() -> MediaRejected:
    return MediaRejected(
        "corrupt",
        "This image looks damaged or incomplete, so I can't open it. "
        "Please send it again or save it in another format.",
    )


def rejected_too_many_pixels(max_pixels: int, size: tuple[int, int] | None) -> MediaRejected:
    limit = f"I can take images up to {_megapixels(max_pixels)} megapixels."
    if size is None:
        return MediaRejected("too_many_pixels", f"This image has too many pixels; {limit}")
    width, height = size
    return MediaRejected(
        "too_many_pixels",
        f"This image is {width} × {height} pixels ({_megapixels(width * height)} megapixels); "
        f"{limit}",
    )


def rejected_bad_dimensions(size: tuple[int, int], max_side: int) -> MediaRejected:
    width, height = size
    return MediaRejected(
        "bad_dimensions",
        f"This image is {width} × {height} pixels; I can take images up to {max_side} pixels "
        "on a side.",
    )


def rejected_animated() -> MediaRejected:
    return MediaRejected(
        "animated",
        "Animated images are not supported. Please send a still image (a single frame).",
    )


@dataclass(frozen=True, slots=True)
class ImageLimits:
    """What an accepted image may be: bytes on the wire, pixels, and pixels on the long side."""

    max_bytes: int
    max_pixels: int
    max_side: int = DEFAULT_MAX_SIDE

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_pixels <= 0 or self.max_side <= 0:
            raise ValueError("image limits must be positive")

    @classmethod
    def from_megabytes(
        cls, max_megabytes: int, max_pixels: int, max_side: int = DEFAULT_MAX_SIDE
    ) -> ImageLimits:
        """Limits from settings (``MAX_UPLOAD_MB``, ``MAX_IMAGE_PIXELS``); 1 MB = 1 MiB."""
        return cls(max_bytes=max_megabytes * MEBIBYTE, max_pixels=max_pixels, max_side=max_side)

    def effective_max_pixels(self) -> int:
        """Our pixel cap, never above Pillow's own bomb threshold, so a bomb warning is a reject."""
        pillow_cap = Image.MAX_IMAGE_PIXELS
        return self.max_pixels if pillow_cap is None else min(self.max_pixels, pillow_cap)


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """A validated image: the metadata-free original to store and a small preview for Claude."""

    original: bytes = field(repr=False)
    original_mime: str
    width: int
    height: int
    sha256: str
    preview: bytes = field(repr=False)
    preview_mime: str
    preview_width: int
    preview_height: int
    format: str
    source_format: str

    @property
    def size_bytes(self) -> int:
        return len(self.original)

    @property
    def extension(self) -> str:
        return EXTENSION_BY_FORMAT[self.format]


def _check_envelope(data: bytes, limits: ImageLimits) -> str:
    """Cheap checks before any decoder runs; returns the sniffed format."""
    if not data:
        raise rejected_empty()
    if len(data) > limits.max_bytes:
        raise rejected_too_large(len(data), limits.max_bytes)
    image_format = sniff_image_type(data)
    if image_format is None:
        raise rejected_unsupported_type()
    return image_format


def _check_dimensions(size: tuple[int, int], limits: ImageLimits) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise rejected_corrupt()
    max_pixels = limits.effective_max_pixels()
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
        if image_format in _ANIMATABLE_FORMATS and getattr(image, "is_animated", False):
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


def _decode(data: bytes, image_format: str) -> Image.Image:
    """Fully decode the first frame, upright, in a plain mode, with no metadata attached.
    Each step replaces the previous image, so at most two full-size copies exist at once."""
    image = _open(data, image_format)
    image.load()
    image = _upright(image)
    image = _normalized(image)
    image.info = {}
    return image


def _encode(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


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


def prepare_image(data: bytes, limits: ImageLimits) -> PreparedImage:
    """The whole pipeline, synchronously (CPU bound: call it from a worker thread)."""
    source_format = _check_envelope(data, limits)
    with _decoder_errors_as_rejections(limits.effective_max_pixels()):
        _inspect(data, source_format, limits)
        image = _decode(data, source_format)
        stored_format = _stored_format(image, source_format)
        original = _encode_original(image, stored_format)
        preview, preview_mime, preview_size = _preview(image, original, stored_format)
    return PreparedImage(
        original=original,
        original_mime=MIME_BY_FORMAT[stored_format],
        width=image.width,
        height=image.height,
        sha256=hashlib.sha256(original).hexdigest(),
        preview=preview,
        preview_mime=preview_mime,
        preview_width=preview_size[0],
        preview_height=preview_size[1],
        format=stored_format,
        source_format=source_format,
    )


class ImageProcessor:
    """Runs ``prepare_image`` in worker threads, at most ``max_workers`` at a time."""

    def __init__(self, limits: ImageLimits, *, max_workers: int = 2) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self._limits = limits
        self._slots = asyncio.Semaphore(max_workers)

    @property
    def limits(self) -> ImageLimits:
        return self._limits

    def check_declared_size(self, size_bytes: int | None) -> None:
        """Reject before downloading when Telegram already tells us the file is too big."""
        if size_bytes is not None and size_bytes > self._limits.max_bytes:
            raise rejected_too_large(size_bytes, self._limits.max_bytes)

    async def prepare_upload(
        self, data: bytes, *, filename_hint: str | None = None
    ) -> PreparedImage:
        """Validate a user's image; the file name is only logged, never trusted."""
        return await self._prepare(data, source="user", filename_hint=filename_hint)

    async def validate_generated(self, data: bytes, claimed_mime: str) -> PreparedImage:
        """Validate the image model's output with exactly the same checks as an upload."""
        prepared = await self._prepare(data, source="generated", filename_hint=None)
        if MIME_BY_FORMAT[prepared.source_format] != claimed_mime:
            log.warning(
                "generated_image_mime_mismatch",
                claimed_mime=claimed_mime,
                sniffed_format=prepared.source_format,
            )
        return prepared

    async def _prepare(
        self, data: bytes, *, source: str, filename_hint: str | None
    ) -> PreparedImage:
        started = time.perf_counter()
        try:
            _check_envelope(data, self._limits)
            async with self._slots:
                prepared = await asyncio.to_thread(prepare_image, data, self._limits)
        except MediaRejected as exc:
            log.info(
                "image_rejected",
                source=source,
                reason=exc.reason,
                bytes=len(data),
                filename_hint=(filename_hint or "")[:80],
            )
            raise
        log.info(
            "image_prepared",
            source=source,
            format=prepared.source_format,
            stored_format=prepared.format,
            width=prepared.width,
            height=prepared.height,
            bytes_in=len(data),
            bytes_stored=prepared.size_bytes,
            duration_ms=round((time.perf_counter() - started) * 1000),
        )
        return prepared


PHOTO_MAX_BYTES: Final = 10_000_000
PHOTO_MAX_SIDE_SUM: Final = 10_000
PHOTO_MAX_RATIO: Final = 20
PHOTO_RECOMPRESSED_SIDE: Final = 2560
PHOTO_RECOMPRESSED_BYTES: Final = 5_000_000


@dataclass(frozen=True, slots=True)
class DeliveryPlan:
    """How to send an image: ``as_photo`` sends a photo; ``also_document`` sends the file as a
    document (next to the photo when ``as_photo``, alone otherwise). At least one is true."""

    as_photo: bool
    also_document: bool


def photo_allowed(width: int, height: int, size_bytes: int) -> bool:
    """Telegram's sendPhoto limits: at most 10 MB, width + height at most 10000, ratio at most
    20."""
    short_side, long_side = sorted((width, height))
    return (
        short_side > 0
        and size_bytes <= PHOTO_MAX_BYTES
        and width + height <= PHOTO_MAX_SIDE_SUM
        and long_side <= PHOTO_MAX_RATIO * short_side
    )


def plan_delivery(
    width: int, height: int, size_bytes: int, *, image_size: str | None
) -> DeliveryPlan:
    """A photo when Telegram takes one, plus the untouched file for 4K or heavily recompressed
    photos; a document alone otherwise."""
    if not photo_allowed(width, height, size_bytes):
        return DeliveryPlan(as_photo=False, also_document=True)
    heavily_recompressed = (
        image_size == "4K"
        or max(width, height) > PHOTO_RECOMPRESSED_SIDE
        or size_bytes > PHOTO_RECOMPRESSED_BYTES
    )
    return DeliveryPlan(as_photo=True, also_document=heavily_recompressed)
