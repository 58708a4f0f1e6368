"""The image safety layer against the hostile corpus, plus the Telegram delivery rules."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import random
import struct
import threading
import time
import warnings
from pathlib import Path

import psutil
import pytest
from PIL import Image

from bot.services.decoding import _encode as decoding_encode
from bot.services.decoding import effective_max_pixels
from bot.services.media import (
    PREVIEW_MAX_SIDE,
    DeliveryPlan,
    ImageLimits,
    ImageProcessor,
    MediaRejected,
    OriginalImage,
    OriginalOnDisk,
    PreparedImage,
    photo_reduction,
    plan_delivery,
    sniff_image_type,
)
from tests.hostile import (
    CORPUS_LIMITS_MB,
    CORPUS_MAX_PIXELS,
    MEBIBYTE,
    HostileFile,
    hostile_corpus,
    hostile_file,
    png_header_only,
)

CORPUS = hostile_corpus()
ACCEPTED = [entry for entry in CORPUS if entry.accepted]
REJECTED = [entry for entry in CORPUS if not entry.accepted]
QUIET_PILLOW = [
    pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
    pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning"),
]
pytestmark = QUIET_PILLOW


def make_processor(max_workers: int = 2) -> ImageProcessor:
    limits = ImageLimits.from_megabytes(CORPUS_LIMITS_MB, CORPUS_MAX_PIXELS)
    return ImageProcessor(limits, max_workers=max_workers)


def by_name(entries: list[HostileFile]) -> dict[str, object]:
    return {"argvalues": entries, "ids": [entry.name for entry in entries]}


# --- the corpus ----------------------------------------------------------------------------


def test_corpus_is_large_and_varied() -> None:
    reasons = {entry.expected_reason for entry in CORPUS}
    assert len(CORPUS) >= 35
    assert len({entry.name for entry in CORPUS}) == len(CORPUS)
    assert {None, "empty", "too_large", "unsupported_type", "corrupt"} <= reasons
    assert {"too_many_pixels", "animated", "bad_dimensions"} <= reasons


def test_corpus_generation_is_fast() -> None:
    from tests import hostile

    hostile._cached_corpus.cache_clear()
    started = time.perf_counter()
    hostile.hostile_corpus()
    elapsed = time.perf_counter() - started
    print(f"corpus generated in {elapsed:.3f} s")
    assert elapsed < 10


@pytest.mark.parametrize("entry", **by_name(REJECTED))  # type: ignore[arg-type]
async def test_hostile_file_is_rejected_with_a_plain_reason(entry: HostileFile) -> None:
    with pytest.raises(MediaRejected) as caught:
        await make_processor().prepare_upload(entry.data, filename_hint=entry.filename)
    assert caught.value.reason == entry.expected_reason
    assert_plain_user_message(caught.value.user_message)


@pytest.mark.parametrize("entry", **by_name(ACCEPTED))  # type: ignore[arg-type]
async def test_acceptable_file_is_accepted_and_cleaned(entry: HostileFile) -> None:
    prepared = await make_processor().prepare_upload(entry.data, filename_hint=entry.filename)
    if entry.expected_size is not None:
        assert (prepared.width, prepared.height) == entry.expected_size
    assert_original_is_clean(prepared)
    assert_preview_fits(prepared)
    for marker in entry.secret_markers:
        assert marker not in prepared.original
        assert marker not in prepared.preview


def assert_plain_user_message(message: str) -> None:
    assert 10 < len(message) < 200
    assert message.endswith(".")
    for leak in ("Traceback", "Error", "PIL", "BytesIO", "/", "\\", "0x", "<", "None"):
        assert leak not in message


def assert_original_is_clean(prepared: PreparedImage) -> None:
    assert prepared.sha256 == hashlib.sha256(prepared.original).hexdigest()
    assert prepared.size_bytes == len(prepared.original)
    with Image.open(io.BytesIO(prepared.original)) as reopened:
        assert reopened.format == prepared.format
        assert reopened.size == (prepared.width, prepared.height)
        assert Image.MIME[prepared.format] == prepared.original_mime
        assert len(reopened.getexif()) == 0
        for key in ("exif", "icc_profile", "xmp", "comment", "XML:com.adobe.xmp", "Comment"):
            assert key not in reopened.info
    assert metadata_segments(prepared.original, prepared.format) == []


def assert_preview_fits(prepared: PreparedImage) -> None:
    with Image.open(io.BytesIO(prepared.preview)) as preview:
        assert preview.size == (prepared.preview_width, prepared.preview_height)
        assert max(preview.size) <= PREVIEW_MAX_SIDE
        assert Image.MIME[preview.format or ""] == prepared.preview_mime
        assert prepared.preview_mime == ("image/png" if has_alpha(prepared) else "image/jpeg")
        assert len(preview.getexif()) == 0


def has_alpha(prepared: PreparedImage) -> bool:
    with Image.open(io.BytesIO(prepared.original)) as reopened:
        return reopened.mode == "RGBA"


def metadata_segments(data: bytes, image_format: str) -> list[bytes]:
    """Names of every container segment that can carry metadata."""
    if image_format == "JPEG":
        return [m for m in jpeg_markers(data) if m[0] in (0xE1, 0xE2, 0xED, 0xFE)]
    if image_format == "PNG":
        return [kind for kind in png_chunk_types(data) if kind not in (b"IHDR", b"IDAT", b"IEND")]
    allowed = (b"VP8 ", b"VP8L", b"VP8X", b"ALPH")
    return [kind for kind in riff_chunk_types(data) if kind not in allowed]


def jpeg_markers(data: bytes) -> list[bytes]:
    markers, offset = [], 2
    while offset < len(data) and data[offset] == 0xFF and data[offset + 1] != 0xDA:
        marker = data[offset + 1]
        (length,) = struct.unpack(">H", data[offset + 2 : offset + 4])
        markers.append(bytes([marker]))
        offset += 2 + length
    return markers


def png_chunk_types(data: bytes) -> list[bytes]:
    kinds, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kinds.append(data[offset + 4 : offset + 8])
        offset += 12 + length
    return kinds


def riff_chunk_types(data: bytes) -> list[bytes]:
    kinds, offset = [], 12
    while offset + 8 <= len(data):
        kind = data[offset : offset + 4]
        (length,) = struct.unpack("<I", data[offset + 4 : offset + 8])
        kinds.append(kind)
        offset += 8 + length + (length & 1)
    return kinds


def test_metadata_detectors_see_metadata() -> None:
    """The cleanliness checks above would notice metadata if it were there."""
    exif_jpeg = hostile_file("jpeg_exif_rotated").data
    text_png = hostile_file("png_metadata_text_xmp_exif").data
    exif_webp = hostile_file("webp_with_exif").data
    assert b"\xe1" in metadata_segments(exif_jpeg, "JPEG")
    assert b"tEXt" in metadata_segments(text_png, "PNG")
    assert b"EXIF" in metadata_segments(exif_webp, "WEBP")


# --- specific transformations -------------------------------------------------------------


async def test_exif_orientation_is_applied() -> None:
    entry = hostile_file("jpeg_exif_rotated")
    prepared = await make_processor().prepare_upload(entry.data)
    assert entry.source_size == (40, 20)
    assert (prepared.width, prepared.height) == (20, 40)
    with Image.open(io.BytesIO(prepared.original)) as image:
        red, _, blue = image.convert("RGB").getpixel((10, 0))  # type: ignore[misc]
        assert red > 200
        assert blue < 60
        red, _, blue = image.convert("RGB").getpixel((10, 39))  # type: ignore[misc]
        assert red < 60
        assert blue > 200


async def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    prepared = await make_processor().prepare_upload(hostile_file("png_16_bit_grey").data)
    with Image.open(io.BytesIO(prepared.original)) as image:
        assert image.mode == "L"
        assert image.getpixel((3, 3)) == 128


async def test_palette_transparency_is_kept() -> None:
    prepared = await make_processor().prepare_upload(hostile_file("png_palette_transparency").data)
    assert prepared.format == "PNG"
    assert prepared.preview_mime == "image/png"
    with Image.open(io.BytesIO(prepared.original)) as image:
        assert image.mode == "RGBA"
        assert image.getpixel((1, 1)) == (0, 255, 0, 255)
        assert image.getpixel((6, 1))[3] == 0  # type: ignore[index]


async def test_cmyk_jpeg_becomes_rgb_jpeg() -> None:
    prepared = await make_processor().prepare_upload(hostile_file("jpeg_cmyk").data)
    assert (prepared.format, prepared.original_mime) == ("JPEG", "image/jpeg")
    with Image.open(io.BytesIO(prepared.original)) as image:
        assert image.mode == "RGB"


async def test_webp_with_alpha_stays_webp_and_previews_as_png() -> None:
    prepared = await make_processor().prepare_upload(hostile_file("webp_rgba").data)
    assert (prepared.format, prepared.original_mime) == ("WEBP", "image/webp")
    assert prepared.preview_mime == "image/png"


async def test_transparent_colour_key_becomes_alpha() -> None:
    entry = hostile_file("png_grey_transparent_colour_key")
    prepared = await make_processor().prepare_upload(entry.data)
    with Image.open(io.BytesIO(prepared.original)) as image:
        assert image.mode == "RGBA"
        assert image.getpixel((1, 1)) == (200, 200, 200, 255)
        assert image.getpixel((6, 1)) == (7, 7, 7, 0)


async def test_translucent_grey_keeps_its_alpha() -> None:
    prepared = await make_processor().prepare_upload(hostile_file("png_la").data)
    with Image.open(io.BytesIO(prepared.original)) as image:
        assert image.mode == "RGBA"
        lowest_alpha, highest_alpha = image.getchannel("A").getextrema()
        assert lowest_alpha < 50  # type: ignore[operator]
        assert highest_alpha > 200  # type: ignore[operator]


async def test_opaque_alpha_channel_is_dropped() -> None:
    prepared = await make_processor().prepare_upload(hostile_file("png_rgba_fully_opaque").data)
    assert (prepared.format, prepared.preview_mime) == ("PNG", "image/jpeg")
    with Image.open(io.BytesIO(prepared.original)) as image:
        assert image.mode == "RGB"


async def test_gif_is_stored_as_png() -> None:
    prepared = await make_processor().prepare_upload(hostile_file("gif_javascript_polyglot").data)
    assert (prepared.source_format, prepared.format) == ("GIF", "PNG")
    assert prepared.extension == "png"


async def test_large_image_gets_a_bounded_jpeg_preview() -> None:
    prepared = await make_processor().prepare_upload(hostile_file("jpeg_3000x2000").data)
    assert (prepared.width, prepared.height) == (3000, 2000)
    assert (prepared.preview_width, prepared.preview_height) == (1568, 1045)
    assert prepared.preview_mime == "image/jpeg"
    assert len(prepared.preview) < len(prepared.original)


async def test_thin_image_preview_keeps_at_least_one_pixel() -> None:
    prepared = await make_processor().prepare_upload(hostile_file("png_1x8000_thin").data)
    assert (prepared.preview_width, prepared.preview_height) == (1, 1568)


def test_prepared_image_repr_has_no_bytes() -> None:
    prepared = PreparedImage(
        original_image=OriginalImage.holding(b"\x00" * 5000),
        original_mime="image/png",
        width=1,
        height=1,
        sha256="0" * 64,
        preview=b"\x00" * 5000,
        preview_mime="image/png",
        preview_width=1,
        preview_height=1,
        format="PNG",
        source_format="PNG",
    )
    assert len(repr(prepared)) < 400


# --- limits and pillow state ---------------------------------------------------------------


def test_too_large_message_names_both_sizes() -> None:
    with pytest.raises(MediaRejected) as caught:
        make_processor().check_declared_size(int(25.3 * MEBIBYTE))
    assert caught.value.reason == "too_large"
    assert caught.value.user_message == "This file is 25.3 MB; I can take images up to 20 MB."


def test_declared_size_at_the_limit_passes() -> None:
    processor = make_processor()
    processor.check_declared_size(None)
    processor.check_declared_size(CORPUS_LIMITS_MB * MEBIBYTE)
    with pytest.raises(MediaRejected):
        processor.check_declared_size(CORPUS_LIMITS_MB * MEBIBYTE + 1)


async def test_pixel_limit_is_ours_not_only_pillows() -> None:
    small_limits = ImageLimits(max_bytes=MEBIBYTE, max_pixels=1_000_000)
    data = hostile_file("jpeg_3000x2000").data
    with pytest.raises(MediaRejected) as caught:
        await ImageProcessor(small_limits).prepare_upload(data)
    assert caught.value.reason == "too_many_pixels"
    assert "6.0 megapixels" in caught.value.user_message


async def test_pixel_limit_never_exceeds_pillows_bomb_threshold() -> None:
    generous = ImageLimits(max_bytes=MEBIBYTE, max_pixels=10**12)
    assert effective_max_pixels(generous) == Image.MAX_IMAGE_PIXELS
    with pytest.raises(MediaRejected) as caught:
        await ImageProcessor(generous).prepare_upload(png_header_only(12000, 12000))
    assert caught.value.reason == "too_many_pixels"


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("name", ["png_header_12000x12000", "gif_frame_12000x12000"])
async def test_bomb_warning_as_error_is_still_a_pixel_rejection(name: str) -> None:
    generous = ImageLimits(max_bytes=MEBIBYTE, max_pixels=10**12)
    with pytest.raises(MediaRejected) as caught:
        await ImageProcessor(generous).prepare_upload(hostile_file(name).data)
    assert caught.value.reason == "too_many_pixels"


async def test_processing_leaves_pillow_and_warnings_state_alone() -> None:
    pixels_before = Image.MAX_IMAGE_PIXELS
    filters_before = list(warnings.filters)
    processor = make_processor()
    for entry in CORPUS[:30]:
        with contextlib.suppress(MediaRejected):
            await processor.prepare_upload(entry.data)
    assert pixels_before == Image.MAX_IMAGE_PIXELS
    assert list(warnings.filters) == filters_before


def test_limits_and_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        ImageLimits(max_bytes=0, max_pixels=1)
    with pytest.raises(ValueError, match="at least 1"):
        ImageProcessor(ImageLimits(max_bytes=1, max_pixels=1), max_workers=0)


# --- generated images ----------------------------------------------------------------------


async def test_generated_image_goes_through_the_same_pipeline() -> None:
    entry = hostile_file("png_metadata_text_xmp_exif")
    prepared = await make_processor().validate_generated(entry.data, "image/png")
    assert prepared.format == "PNG"
    assert_original_is_clean(prepared)


async def test_a_clean_generated_png_keeps_its_image_data_without_any_other_chunk() -> None:
    """No re-encode for a provider's PNG whose pixels need no change: its IDAT stream is kept,
    every ancillary chunk and anything after IEND is dropped, and it decodes to the same pixels."""
    image = Image.effect_noise((300, 200), 30).convert("RGB")
    out = io.BytesIO()
    image.save(out, "PNG", pnginfo=_text_chunk("Comment", "secret provenance"), compress_level=9)
    data = out.getvalue() + b"TRAILING-PAYLOAD"
    prepared = await make_processor().validate_generated(data, "image/png")
    assert b"secret provenance" not in prepared.original
    assert b"TRAILING-PAYLOAD" not in prepared.original
    assert b"tEXt" not in prepared.original
    with Image.open(io.BytesIO(prepared.original)) as stored:
        assert stored.tobytes() == image.tobytes()
    idat = data[data.index(b"IDAT") - 4 : data.index(b"IEND") - 4]
    assert idat in prepared.original  # the provider's own compressed data, not a re-encode
    assert_original_is_clean(prepared)
    # A user's upload of the same bytes is still re-encoded.
    upload = await make_processor().prepare_upload(data)
    assert idat not in upload.original
    assert b"secret provenance" not in upload.original


async def test_a_generated_png_with_nothing_to_strip_is_kept_as_the_same_bytes() -> None:
    image = Image.effect_noise((300, 200), 30).convert("RGB")
    out = io.BytesIO()
    image.save(out, "PNG")
    data = out.getvalue()
    prepared = await make_processor().validate_generated(data, "image/png")
    assert prepared.original == data
    assert prepared.photo is None  # small enough to be the photo itself


async def test_a_rotated_generated_png_is_re_encoded_upright() -> None:
    """Pixels that change (an EXIF orientation) are never stored as the provider's stream."""
    image = Image.new("RGB", (40, 20), (200, 10, 10))
    image.paste((10, 10, 200), (0, 0, 10, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to show
    out = io.BytesIO()
    image.save(out, "PNG", exif=exif)
    prepared = await make_processor().validate_generated(out.getvalue(), "image/png")
    with Image.open(io.BytesIO(prepared.original)) as stored:
        assert stored.size == (20, 40)
        assert stored.getpixel((10, 2)) == (10, 10, 200)


def _gradient_png(width: int, height: int) -> bytes:
    grey = Image.linear_gradient("L").resize((width, height))
    out = io.BytesIO()
    Image.merge("RGB", [grey, grey.rotate(180), grey]).save(out, "PNG")
    return out.getvalue()


async def test_a_large_generated_image_gets_a_jpeg_photo_at_telegrams_size() -> None:
    data = _gradient_png(4200, 2100)
    prepared = await make_processor().validate_generated(data, "image/png")
    assert prepared.original == data  # the document stays the lossless original
    assert prepared.photo is not None
    with Image.open(io.BytesIO(prepared.photo)) as photo:
        assert (photo.format, photo.size, photo.mode) == ("JPEG", (2100, 1050), "RGB")
    assert max(prepared.preview_width, prepared.preview_height) == PREVIEW_MAX_SIDE


async def test_a_transparent_generated_image_gets_its_photo_on_white() -> None:
    image = Image.merge(
        "RGBA", [Image.effect_noise((3000, 1500), 60)] * 3 + [Image.new("L", (3000, 1500), 255)]
    )
    image.paste((0, 0, 0, 0), (1500, 0, 3000, 1500))  # the right half fully transparent
    out = io.BytesIO()
    image.save(out, "PNG")
    prepared = await make_processor().validate_generated(out.getvalue(), "image/png")
    assert prepared.photo is not None  # 3000 px: over the side Telegram shows
    with Image.open(io.BytesIO(prepared.photo)) as photo:
        assert (photo.format, photo.size, photo.mode) == ("JPEG", (3000, 1500), "RGB")
        assert all(channel >= 250 for channel in photo.getpixel((2500, 700)))
    assert prepared.preview_mime == "image/png"  # the model still sees the transparency


async def test_an_uploaded_image_gets_no_photo() -> None:
    prepared = await make_processor().prepare_upload(_gradient_png(3000, 1500))
    assert prepared.photo is None


_MB = 1_000_000


@pytest.mark.parametrize(
    ("width", "height", "size_bytes", "expected"),
    [
        (1024, 1024, 1 * _MB, None),  # the original is the photo
        (2560, 1440, 9 * _MB, None),
        (2560, 1440, 10 * _MB + 1, 1),  # too heavy: a JPEG at its own size
        (2752, 1536, 7 * _MB, 1),  # Telegram would scale it: a JPEG at its own size
        (3072, 1728, 20 * _MB, 1),
        (3073, 1728, 20 * _MB, 2),
        (5504, 3072, 28 * _MB, 2),  # 4K: 2752 x 1536
        (4096, 4096, 30 * _MB, 2),
        (6200, 3800, 1 * _MB, 3),  # the sides' sum over 10000 even when halved
        (9000, 1100, 1 * _MB, 3),
        (100, 2001, 1 * _MB, None),  # thinner than 1:20: no photo at all
        (0, 100, 100, None),
    ],
)
def test_photo_reduction(width: int, height: int, size_bytes: int, expected: int | None) -> None:
    assert photo_reduction(width, height, size_bytes) == expected


def _text_chunk(key: str, value: str) -> object:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(key, value)
    return info


async def test_generated_image_with_a_wrong_claimed_mime_is_judged_by_its_bytes() -> None:
    data = hostile_file("jpeg_named_gif").data
    prepared = await make_processor().validate_generated(data, "image/png")
    assert prepared.source_format == "JPEG"


@pytest.mark.parametrize(
    "name", ["png_header_50000x50000", "jpeg_truncated", "html_named_png", "webp_animated"]
)
async def test_bad_generated_image_is_rejected(name: str) -> None:
    entry = hostile_file(name)
    with pytest.raises(MediaRejected) as caught:
        await make_processor().validate_generated(entry.data, "image/png")
    assert caught.value.reason == entry.expected_reason


# --- sniffing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\xff\xd8\xff\xe0rest", "JPEG"),
        (b"\x89PNG\r\n\x1a\nrest", "PNG"),
        (b"GIF87a....", "GIF"),
        (b"GIF89a....", "GIF"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "WEBP"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", None),
        (b"RIFF\x00\x00\x00\x00WEB", None),
        (b"\xff\xd8", None),
        (b"\x89PNG\r\n", None),
        (b"GIF90a", None),
        (b"BM\x00\x00", None),
        (b"II*\x00", None),
        (b"%PDF-1.7", None),
        (b"PK\x03\x04", None),
        (b"<svg", None),
        (b"", None),
    ],
)
def test_sniff_image_type(data: bytes, expected: str | None) -> None:
    assert sniff_image_type(data) == expected


# --- resources -----------------------------------------------------------------------------


class RssSampler:
    """Samples the process RSS in a background thread and keeps the peak."""

    def __init__(self, interval: float = 0.002) -> None:
        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.baseline = self._process.memory_info().rss
        self.peak = self.baseline
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            self._stop.wait(self._interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.baseline) / MEBIBYTE


async def test_whole_corpus_stays_within_memory_and_time_bounds() -> None:
    processor = make_processor()
    durations: dict[str, float] = {}
    with RssSampler() as sampler:
        for entry in CORPUS:
            started = time.perf_counter()
            with contextlib.suppress(MediaRejected):
                await processor.prepare_upload(entry.data)
            durations[entry.name] = time.perf_counter() - started
    slowest = sorted(durations.items(), key=lambda item: item[1], reverse=True)[:5]
    print(f"\nRSS growth {sampler.growth_mb:.1f} MB over {len(CORPUS)} files")
    print(f"total {sum(durations.values()):.3f} s; slowest:")
    for name, seconds in slowest:
        print(f"  {name}: {seconds * 1000:.1f} ms")
    assert sampler.growth_mb < 300
    assert max(durations.values()) < 10


async def test_event_loop_keeps_running_while_images_decode() -> None:
    processor = make_processor(max_workers=2)
    data = hostile_file("jpeg_3000x2000").data
    ticks = 0
    done = asyncio.Event()

    async def tick() -> None:
        nonlocal ticks
        while not done.is_set():
            await asyncio.sleep(0.002)
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = time.perf_counter()
    await asyncio.gather(*(processor.prepare_upload(data) for _ in range(6)))
    elapsed = time.perf_counter() - started
    done.set()
    await ticker
    print(f"\n6 decodes of 3000x2000 in {elapsed:.3f} s; the loop ticked {ticks} times meanwhile")
    assert ticks >= 5


# --- delivery ------------------------------------------------------------------------------

MB = 1_000_000
PHOTO_ONLY = DeliveryPlan(as_photo=True, also_document=False)
PHOTO_AND_DOCUMENT = DeliveryPlan(as_photo=True, also_document=True)
DOCUMENT_ONLY = DeliveryPlan(as_photo=False, also_document=True)


@pytest.mark.parametrize(
    ("width", "height", "size_bytes", "image_size", "expected"),
    [
        (1024, 1024, 1 * MB, "1K", PHOTO_ONLY),
        (2048, 2048, 3 * MB, "2K", PHOTO_ONLY),
        (2560, 1440, 2 * MB, None, PHOTO_ONLY),
        (2561, 1440, 2 * MB, None, PHOTO_AND_DOCUMENT),
        (4096, 4096, 8 * MB, "4K", PHOTO_AND_DOCUMENT),
        (1024, 1024, 1 * MB, "4K", PHOTO_AND_DOCUMENT),
        (2000, 2000, 5 * MB, None, PHOTO_ONLY),
        (2000, 2000, 5 * MB + 1, None, PHOTO_AND_DOCUMENT),
        (2000, 2000, 10 * MB, None, PHOTO_AND_DOCUMENT),
        (2000, 2000, 10 * MB + 1, None, DOCUMENT_ONLY),
        (5000, 5000, 1 * MB, None, PHOTO_AND_DOCUMENT),
        (5000, 5001, 1 * MB, None, DOCUMENT_ONLY),
        (6000, 4000, 1 * MB, None, PHOTO_AND_DOCUMENT),
        (100, 2000, 1 * MB, None, PHOTO_ONLY),
        (100, 2001, 1 * MB, None, DOCUMENT_ONLY),
        (2001, 100, 1 * MB, None, DOCUMENT_ONLY),
        (1, 20, 100, None, PHOTO_ONLY),
        (1, 8000, 100, None, DOCUMENT_ONLY),
        (0, 100, 100, None, DOCUMENT_ONLY),
    ],
)
def test_plan_delivery(
    width: int, height: int, size_bytes: int, image_size: str | None, expected: DeliveryPlan
) -> None:
    assert plan_delivery(width, height, size_bytes, image_size=image_size) == expected


def test_a_stored_original_is_read_from_its_file_and_its_bytes_let_go(tmp_path: Path) -> None:
    original = OriginalImage.holding(b"\x89PNG" + b"\x00" * 5000)
    prepared = PreparedImage(
        original_image=original,
        original_mime="image/png",
        width=1,
        height=1,
        sha256="0" * 64,
        preview=b"",
        preview_mime="image/png",
        preview_width=1,
        preview_height=1,
        format="PNG",
        source_format="PNG",
    )
    assert (prepared.original_file, prepared.size_bytes) == (None, 5004)
    original.stored_in(tmp_path / "blob")
    assert original.data is None
    assert (prepared.original_file, prepared.size_bytes) == (tmp_path / "blob", 5004)
    with pytest.raises(OriginalOnDisk):
        _ = prepared.original


@pytest.mark.parametrize(
    ("image_format", "options"),
    [
        ("JPEG", {"quality": 87}),
        ("JPEG", {"quality": 92, "optimize": True}),
        ("PNG", {}),
        ("WEBP", {"quality": 92}),
    ],
)
def test_encoding_through_a_file_gives_the_bytes_a_buffer_would(
    image_format: str, options: dict[str, object]
) -> None:
    """Images are encoded into an unnamed file (Pillow then encodes without the GIL): the bytes
    must be exactly those of an in-memory encode."""
    rng = random.Random(7)
    image = Image.frombytes(
        "RGB", (640, 360), bytes(rng.randrange(256) for _ in range(640 * 360 * 3))
    )
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    assert decoding_encode(image, image_format, **options) == buffer.getvalue()
