"""The `generate_image` tool: the configured image provider (Gemini or OpenAI Images), charged
from the usage the provider reported (the per-image price without usage), held before the call
(per-image price plus 25%) and captured only after the image reached the chat (by the file sink)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal

import structlog
from pydantic import BeforeValidator, Field
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.agent.tools.base import ToolContext, ToolError, ToolInput
from bot.db.models import ApiCall
from bot.integrations.images import ImageBlocked, ImageGateway, ImageResult, ImageUnavailable
from bot.services.billing import BillingService, CallRecord, Hold, InsufficientBalance
from bot.services.files import (
    BlobMissing,
    FileService,
    PendingCharge,
    StoredFileRef,
    shown_id,
)
from bot.services.pricing import PriceTable, image_cost_micros
from bot.services.reports import format_usd

log = structlog.get_logger(__name__)

AspectRatio = Literal["1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"]
ImageSize = Literal["1K", "2K", "4K"]
MAX_REFERENCES = 14
MAX_REFERENCE_BYTES = 18 * 1024 * 1024  # Gemini takes about 20 MB of inline data per request


def _as_text(value: object) -> object:
    """Ids are strings; a bare number from the model is taken as its string form."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


FileIdText = Annotated[str, BeforeValidator(_as_text)]
PROVIDER_MESSAGES = {
    "busy": "the image service is busy right now; try again in a minute",
    "connection": "the image service could not be reached; try again in a minute",
    "timeout": "the image service did not answer in time",
    "auth": "the image service is unavailable right now",
    "bad_request": "the image service rejected this request",
    "model_gone": "image generation is unavailable right now",
}


class GenerateImageInput(ToolInput):
    prompt: str = Field(
        min_length=1,
        max_length=2000,
        description="What to draw (or how to change the reference images), in English.",
    )
    aspect_ratio: AspectRatio = Field(default="1:1", description="Aspect ratio of the image.")
    image_size: ImageSize = Field(default="2K", description="Resolution: 1K, 2K or 4K.")
    reference_file_ids: list[FileIdText] = Field(
        default_factory=list,
        max_length=MAX_REFERENCES,
        description=(
            "file_ids of earlier images (from 'Available files') to edit or combine; "
            "leave empty for a new image."
        ),
    )


class ImageRateLimit:
    """Generated images per user in the last hour, counted from api_calls."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], *, per_hour: int) -> None:
        self._sessionmaker = sessionmaker
        self._per_hour = per_hour

    @property
    def per_hour(self) -> int:
        return self._per_hour

    async def allows(self, user_id: int) -> bool:
        since = datetime.now(UTC) - timedelta(hours=1)
        stmt = select(func.count()).where(
            ApiCall.user_id == user_id,
            ApiCall.purpose == "generate_image",
            ApiCall.status == "ok",
            ApiCall.created_at >= since,
        )
        async with self._sessionmaker() as session:
            count = int(await session.scalar(stmt) or 0)
        return count < self._per_hour


class GenerateImageTool:
    name: ClassVar[str] = "generate_image"
    description: ClassVar[str] = (
        "Generate one image, or edit/combine earlier images when "
        "reference_file_ids are given. The image is sent to the user automatically; do not "
        "describe it as a link. Costs money per image (4K costs more)."
    )
    input_model: ClassVar[type[ToolInput]] = GenerateImageInput

    def __init__(
        self,
        *,
        gateway: ImageGateway,
        files: FileService,
        billing: BillingService,
        prices: PriceTable,
        rate_limit: ImageRateLimit,
    ) -> None:
        self._gateway = gateway
        self._files = files
        self._billing = billing
        self._prices = prices
        self._rate_limit = rate_limit

    async def run(self, args: Any, ctx: ToolContext) -> dict[str, Any]:
        assert isinstance(args, GenerateImageInput)
        if len(args.reference_file_ids) > self._gateway.max_references:
            raise ToolError(
                f"At most {self._gateway.max_references} reference_file_ids with this image model."
            )
        references = await self._references(args.reference_file_ids, ctx.user_id)
        if not await self._rate_limit.allows(ctx.user_id):
            raise ToolError(
                f"Image limit reached: at most {self._rate_limit.per_hour} images per hour. "
                "Tell the user to try again later."
            )
        model = self._gateway.model
        price = self._prices.image_price(model, args.image_size)
        hold = await self._hold(ctx, price, self._prices.image_hold(model, args.image_size))
        await ctx.report_progress(_progress_line(args))
        ctx.chat_action("upload_photo")
        image = await self._generate(args, references, hold, ctx, price)
        cost = image_cost_micros(self._prices.image_prices(model), image.usage, args.image_size)
        record = self._record(ctx, args, image, cost, price)
        return {
            "success": True,
            "cost_usd": format_usd(min(self._billing.user_price(cost), hold.amount_micros)),
            "parameters_used": {
                "aspect_ratio": args.aspect_ratio,
                "image_size": args.image_size,
                "reference_file_ids": [str(r.id) for r, _ in references],
                "model": model,
            },
            "_file_contents": [
                {
                    "filename": "image.png",
                    "content": image.data,
                    "mime_type": image.mime_type,
                    "image_size": args.image_size,
                    "metadata": {
                        "prompt": args.prompt,
                        "model": image.model_version or model,
                        "aspect_ratio": args.aspect_ratio,
                        "image_size": args.image_size,
                        "reference_file_ids": [r.id for r, _ in references],
                        "cost_micros": cost,
                        "tool_use_id": ctx.tool_use_id,
                    },
                    "charge": PendingCharge(hold=hold, record=record),
                }
            ],
        }

    async def _references(
        self, raw_ids: list[str], user_id: int
    ) -> list[tuple[StoredFileRef, tuple[bytes, str]]]:
        refs = []
        for raw in raw_ids:
            ref = await self._files.resolve(user_id, raw)
            if ref is None:
                raise ToolError(f"file not found: {shown_id(raw)}")
            refs.append(ref)
        loaded = []
        for ref in refs:
            try:
                data = await self._files.load_original(ref)
            except BlobMissing:
                raise ToolError(f"file not found: {ref.id} (it is no longer stored)") from None
            loaded.append((ref, (data, ref.mime_type)))
        if sum(len(data) for _, (data, _) in loaded) > MAX_REFERENCE_BYTES:
            raise ToolError(
                "The reference images are too large together for one request; "
                "use fewer reference_file_ids."
            )
        return loaded

    async def _hold(self, ctx: ToolContext, price: int, hold: int) -> Hold:
        amount = self._billing.user_price(hold)
        try:
            return await self._billing.hold(
                ctx.user_id, amount, key=f"img:{ctx.tool_use_id}", description="generate_image"
            )
        except InsufficientBalance as exc:
            raise ToolError(
                f"Insufficient balance: this image costs about "
                f"{format_usd(self._billing.user_price(price))} ({format_usd(amount)} is reserved "
                f"while it is made) and the user has "
                f"{format_usd(exc.available_micros)} available. Nothing was generated or charged."
            ) from None

    async def _generate(
        self,
        args: GenerateImageInput,
        references: list[tuple[StoredFileRef, tuple[bytes, str]]],
        hold: Hold,
        ctx: ToolContext,
        price: int,
    ) -> ImageResult:
        try:
            return await self._gateway.generate(
                args.prompt,
                aspect_ratio=args.aspect_ratio,
                image_size=args.image_size,
                references=[data for _, data in references],
                deadline=ctx.deadline,
            )
        except ImageBlocked as exc:
            await self._settle_failure(hold, ctx, args, "blocked", exc.reason, exc=exc)
            raise ToolError(
                f"No image was generated: {exc.user_reason} ({exc.reason}). Nothing was charged."
            ) from None
        except ImageUnavailable as exc:
            await self._settle_failure(
                hold,
                ctx,
                args,
                "error",
                f"{exc.kind}: {exc.detail}",
                cost_unknown=exc.cost_unknown,
                price=price if exc.cost_unknown else 0,
            )
            message = PROVIDER_MESSAGES.get(exc.kind, "the image service failed")
            if exc.kind == "model_gone":
                raise ToolError(
                    f"{message[0].upper()}{message[1:]}. Nothing was charged. Tell the user in "
                    "plain words that image generation is unavailable right now; text chat works."
                ) from None
            raise ToolError(f"No image was generated: {message}. Nothing was charged.") from None
        except BaseException as exc:
            # Cut off mid-request (a shutdown): the provider may still bill for the image.
            interrupted = isinstance(exc, asyncio.CancelledError)
            settle = self._settle_failure(
                hold,
                ctx,
                args,
                "error",
                "interrupted" if interrupted else type(exc).__name__,
                cost_unknown=interrupted,
                price=price if interrupted else 0,
            )
            await asyncio.shield(settle)
            raise

    async def _settle_failure(
        self,
        hold: Hold,
        ctx: ToolContext,
        args: GenerateImageInput,
        status: Literal["blocked", "error"],
        error: str,
        *,
        exc: ImageBlocked | None = None,
        cost_unknown: bool = False,
        price: int = 0,
    ) -> None:
        record = CallRecord(
            user_id=ctx.user_id,
            provider=self._gateway.provider,
            model=self._gateway.model,
            purpose="generate_image",
            status=status,
            provider_cost_micros=price,
            price_version=self._prices.image_price_version(self._gateway.model),
            tool_use_id=ctx.tool_use_id,
            input_tokens=exc.input_tokens if exc else 0,
            output_tokens=exc.output_tokens if exc else 0,
            image_size=args.image_size,
            error=error,
            provider_cost_unknown=cost_unknown,
            charge_key=f"img:failed:{ctx.tool_use_id}",
        )
        await self._billing.settle(hold, record)
        log.info("image_not_generated", user_id=ctx.user_id, status=status, error=error)

    def _record(
        self,
        ctx: ToolContext,
        args: GenerateImageInput,
        image: ImageResult,
        cost: int,
        list_price: int,
    ) -> CallRecord:
        return CallRecord(
            user_id=ctx.user_id,
            provider=self._gateway.provider,
            model=self._gateway.model,
            purpose="generate_image",
            status="ok",
            provider_cost_micros=cost,
            price_version=self._prices.image_price_version(self._gateway.model),
            tool_use_id=ctx.tool_use_id,
            input_tokens=image.input_tokens,
            output_tokens=image.output_tokens,
            image_output_tokens=image.image_output_tokens,
            image_list_price_micros=list_price,
            image_count=1,
            image_size=args.image_size,
            duration_ms=image.duration_ms,
        )


def _progress_line(args: GenerateImageInput) -> str:
    verb = "Editing" if args.reference_file_ids else "Generating"
    return f"{verb} a {args.image_size} image, {args.aspect_ratio}…"
