"""How late an event loop's 1 ms timers fire while the bot's `ImageProcessor` prepares 4K
answers on its decoding threads, two at a time, in one process set up as the bot's is (large
blocks mapped separately). Prints the lateness percentiles (ms) as JSON.

A decoding thread that holds the GIL through a long C call keeps the loop, and so another
person's turn, waiting: encoding a JPEG into a BytesIO held it about 10 ms per 4K photo (p99
about 6 ms here); the bot now encodes into an unnamed file, which Pillow does without the GIL.

Run: ``uv run python -m tests.bench.decode_lag [images]`` (the image benchmark runs it).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from bot.providers.heap import map_large_blocks_separately
from bot.services.files import GENERATED_MAX_BYTES
from bot.services.media import ImageLimits, ImageProcessor
from tests.bench.__main__ import output_size, percentiles, photo_png

DEFAULT_MAX_IMAGE_PIXELS = 40_000_000  # the MAX_IMAGE_PIXELS setting's default


async def loop_lag_while_decoding(photo: bytes, images: int) -> dict[str, float]:
    processor = ImageProcessor(
        ImageLimits(max_bytes=GENERATED_MAX_BYTES, max_pixels=DEFAULT_MAX_IMAGE_PIXELS)
    )
    await processor.validate_generated(photo, "image/png")  # Pillow imported, threads started
    lags: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append((time.perf_counter() - started - 0.001) * 1000)

    async def prepare(count: int) -> None:
        for _ in range(count):
            await processor.validate_generated(photo, "image/png")

    probing = asyncio.create_task(probe())
    await asyncio.gather(prepare(images // 2), prepare(images - images // 2))
    done.set()
    await probing
    return percentiles(lags)


def main() -> None:
    images = int(sys.argv[1]) if len(sys.argv) > 1 else 12
    map_large_blocks_separately()
    photo = photo_png(*output_size("16:9", "4K", realistic=True))
    print(json.dumps(asyncio.run(loop_lag_while_decoding(photo, images))))


if __name__ == "__main__":
    main()
