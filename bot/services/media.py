"""Image intake safety: magic-byte sniffing, size limits, plain-words rejections, and the Telegram
photo-or-document decision.

Every image that enters the bot (a user's upload or the image model's output) goes through
``ImageProcessor``, which checks the envelope here and decodes in a worker thread with
``bot.services.decoding`` (bounded decoding, orientation, metadata stripping, previews for Claude).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import structlog

from bot.i18n import _
from bot.providers.heap import return_free_memory
from bot.providers.niceness import lower_this_thread

log = structlog.get_logger(__name__)

MEBIBYTE: Final = 1024 * 1024
PREVIEW_MAX_SIDE: Final = 1568
DEFAULT_MAX_SIDE: Final = 16384
JPEG_QUALITY: Final = 92
PREVIEW_JPEG_QUALITY: Final = 85
PHOTO_JPEG_QUALITY: Final = 87
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
ANIMATABLE_FORMATS: Final = frozenset({"PNG", "WEBP", "GIF"})


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
    return MediaRejected("empty", _("This file is empty. Please send the image again."))


def rejected_too_large(size_bytes: int, max_bytes: int) -> MediaRejected:
    return MediaRejected(
        "too_large",
        _("This file is {size} MB; I can take images up to {limit} MB.").format(
            size=_megabytes(size_bytes), limit=_megabytes(max_bytes)
        ),
    )


def rejected_unsupported_type() -> MediaRejected:
    return MediaRejected(
        "unsupported_type",
        _("I can read JPEG, PNG, WebP and GIF images; this file is not one of them."),
    )


def rejected_corrupt() -> MediaRejected:
    return MediaRejected(
        "corrupt",
        _(
            "This image looks damaged or incomplete, so I can't open it. "
            "Please send it again or save it in another format."
        ),
    )


def rejected_too_many_pixels(max_pixels: int, size: tuple[int, int] | None) -> MediaRejected:
    limit = _("I can take images up to {limit} megapixels.").format(limit=_megapixels(max_pixels))
    if size is None:
        return MediaRejected(
            "too_many_pixels", _("This image has too many pixels; {limit}").format(limit=limit)
        )
    width, height = size
    return MediaRejected(
        "too_many_pixels",
        _("This image is {width} × {height} pixels ({megapixels} megapixels); {limit}").format(
            width=width, height=height, megapixels=_megapixels(width * height), limit=limit
        ),
    )


def rejected_bad_dimensions(size: tuple[int, int], max_side: int) -> MediaRejected:
    width, height = size
    return MediaRejected(
        "bad_dimensions",
        _(
            "This image is {width} × {height} pixels; I can take images up to {max_side} pixels "
            "on a side."
        ).format(width=width, height=height, max_side=max_side),
    )


def rejected_animated() -> MediaRejected:
    return MediaRejected(
        "animated",
        _("Animated images are not supported. Please send a still image (a single frame)."),
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


class OriginalOnDisk(Exception):
    """The original's bytes were let go once stored: read `PreparedImage.original_file`."""


@dataclass(eq=False, slots=True)
class OriginalImage:
    """A prepared image's original: its bytes until they are stored on this machine's disk, then
    only the file they are in. A 4K original is 28 MB, and sending it to the chat can take
    seconds; meanwhile the next image's answer is being parsed."""

    data: bytes | None = field(repr=False)
    size: int
    file: Path | None = None

    @classmethod
    def holding(cls, data: bytes) -> OriginalImage:
        return cls(data, len(data))

    def stored_in(self, file: Path) -> None:
        """The bytes are in `file` (written and synced): let go of them."""
        self.file = file
        self.data = None


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """A validated image: the metadata-free original to store and a small preview for Claude."""

    original_image: OriginalImage
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
    # The JPEG to send as the Telegram photo when the original is too large to go as one as it
    # is (generated images only; None: the original is the photo, or no photo is possible).
    photo: bytes | None = field(default=None, repr=False)

    @property
    def original(self) -> bytes:
        """The original's bytes; OriginalOnDisk once they were stored and let go."""
        if self.original_image.data is None:
            raise OriginalOnDisk(str(self.original_image.file))
        return self.original_image.data

    @property
    def original_file(self) -> Path | None:
        """Where the original is read from once stored on this machine's disk (None: in memory)."""
        return self.original_image.file

    @property
    def size_bytes(self) -> int:
        return self.original_image.size

    @property
    def extension(self) -> str:
        return EXTENSION_BY_FORMAT[self.format]


def check_envelope(data: bytes, limits: ImageLimits) -> str:
    """Cheap checks before any decoder runs; returns the sniffed format."""
    if not data:
        raise rejected_empty()
    if len(data) > limits.max_bytes:
        raise rejected_too_large(len(data), limits.max_bytes)
    image_format = sniff_image_type(data)
    if image_format is None:
        raise rejected_unsupported_type()
    return image_format


def _decode_in_worker(data: bytes, limits: ImageLimits, generated: bool = False) -> PreparedImage:
    # Pillow is imported with the first image, in this worker thread, so a bot that only
    # chats never loads it (about 5 MB) and the event loop never waits for the import.
    from bot.services.decoding import prepare_image

    try:
        return prepare_image(data, limits, keep_png_stream=generated, photo=generated)
    finally:
        return_free_memory()


class ImageProcessor:
    """Decodes images (``bot.services.decoding``) in worker threads, ``max_workers`` at a time."""

    def __init__(self, limits: ImageLimits, *, max_workers: int = 2) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self._limits = limits
        self._max_workers = max_workers
        self._executor: ThreadPoolExecutor | None = None

    def _threads(self) -> ThreadPoolExecutor:
        """The decoding threads, at background priority (started with the first image)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                self._max_workers,
                thread_name_prefix="image-decode",
                initializer=lower_this_thread,
            )
        return self._executor

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
            check_envelope(data, self._limits)
            decode = functools.partial(_decode_in_worker, data, self._limits, source == "generated")
            prepared = await asyncio.get_running_loop().run_in_executor(
                self._threads(), contextvars.copy_context().run, decode
            )
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
PHOTO_PREVIEW_SIDE: Final = 2560  # what Telegram scales a photo down to
PHOTO_JPEG_MAX_SIDE: Final = 3072


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


def photo_reduction(width: int, height: int, size_bytes: int) -> int | None:
    """How much to shrink an original for the JPEG sent as its photo (1: its own size), when
    the original is over Telegram's photo limits or larger than Telegram shows a photo (long
    side over PHOTO_PREVIEW_SIDE; Telegram scales the rest itself). The smallest whole factor
    that brings the long side to at most PHOTO_JPEG_MAX_SIDE and the sides' sum within the
    limit: shrinking by a whole factor averages blocks of pixels, a fraction of the work of a
    resampling filter. None when the original goes as it is, or when no photo can be sent (a
    side more than PHOTO_MAX_RATIO times the other)."""
    short_side, long_side = sorted((width, height))
    if short_side <= 0 or long_side > PHOTO_MAX_RATIO * short_side:
        return None
    if long_side <= PHOTO_PREVIEW_SIDE and photo_allowed(width, height, size_bytes):
        return None
    by_side = -(-long_side // PHOTO_JPEG_MAX_SIDE)
    by_sum = -(-(width + height) // PHOTO_MAX_SIDE_SUM)
    return max(by_side, by_sum)


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
