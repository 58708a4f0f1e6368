"""An image call as a Report for the metered path: charged from the usage the provider reported
(the per-image price when it reported none); a failure may still have cost the provider (cut off
mid-request), which is recorded at the per-image price but never charged. An image the person
stopped (/stop) is recorded as 'cancelled' the same way: its possible cost kept, nothing charged."""

from __future__ import annotations

import asyncio

from bot.providers.images import ImageBlocked, ImageResult, ImageUnavailable
from bot.services.cancellation import StopToken, cut_by_stop
from bot.services.metered import Report, stopped_report
from bot.services.pricing import ImagePrice, image_cost_micros


class ImageMeasure:
    def __init__(
        self,
        prices: ImagePrice,
        image_size: str,
        *,
        list_price: int,
        price_version: str,
        stop: StopToken | None = None,
    ) -> None:
        self._stop = stop
        self._prices = prices
        self._size = image_size
        self._list_price = list_price
        self._version = price_version

    def reported(self, result: ImageResult) -> Report:
        return Report(
            provider_cost_micros=image_cost_micros(self._prices, result.usage, self._size),
            price_version=self._version,
            input_tokens=result.input_tokens,
            output_tokens=result.output_tokens,
            image_output_tokens=result.image_output_tokens,
            image_list_price_micros=self._list_price,
            image_count=1,
            duration_ms=result.duration_ms,
        )

    def failed(self, exc: BaseException) -> Report:
        if isinstance(exc, ImageBlocked):
            return Report(
                status="blocked",
                price_version=self._version,
                input_tokens=exc.input_tokens,
                output_tokens=exc.output_tokens,
                error=exc.reason,
            )
        if cut_by_stop(exc, self._stop):  # the person never got it: nothing to pay
            return stopped_report(self._list_price, self._version)
        if isinstance(exc, ImageUnavailable):
            error, unknown = f"{exc.kind}: {exc.detail}", exc.cost_unknown
        else:
            # Cut off mid-request (a shutdown): the provider may still bill for the image.
            unknown = isinstance(exc, asyncio.CancelledError)
            error = "interrupted" if unknown else type(exc).__name__
        return Report(
            status="error",
            provider_cost_micros=self._list_price if unknown else 0,
            price_version=self._version,
            error=error,
            cost_unknown=unknown,
        )
