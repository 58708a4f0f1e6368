"""The `generate_image` tool: the configured image provider (Gemini or OpenAI Images), charged
from the usage the provider reported (the per-image price without usage), held before the call
(per-image price plus 25%) and captured only after the image reached the chat (by the file sink)."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any, ClassVar, Literal

import structlog
from pydantic import BeforeValidator, Field

from bot.agent.tools.base import ToolContext, ToolError, ToolInput, ToolOutput
from bot.agent.tools.image_measure import ImageMeasure
from bot.providers.images import (
    AnswerGate,
    ImageBlocked,
    ImageGateway,
    ImageResult,
    ImageUnavailable,
)
from bot.services.delivery import ProducedFile
from bot.services.files import BlobMissing, FileService, StoredFileRef, shown_id
from bot.services.ledger import InsufficientBalance
from bot.services.media import ImageProcessor, MediaRejected, PreparedImage
from bot.services.metered import Meter, MeteredCalls, PendingCharge
from bot.services.money import format_usd
from bot.services.pricing import PriceTable
from bot.services.usage import ImageRateLimit

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
        metered: MeteredCalls,
        prices: PriceTable,
        rate_limit: ImageRateLimit,
        processor: ImageProcessor,
        gate: AnswerGate,
    ) -> None:
        self._gateway = gateway
        self._processor = processor
        self._gate = gate
        self._files = files
        self._metered = metered
        self._prices = prices
        self._rate_limit = rate_limit

    async def run(self, args: Any, ctx: ToolContext) -> ToolOutput:
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
        price = self._prices.image_price(self._gateway.model, args.image_size)
        async with self._gate.admit() as ticket:
            image, charge = await self._generate(args, references, ctx, price)
            try:
                await ticket.hold()  # when the gateway's transport did not wait for it already
                prepared = await self._checked(image)
            except BaseException:  # stopped before the file could be delivered: no charge
                await charge.release("interrupted")
                raise
        cost = charge.report.provider_cost_micros
        produced = self._produced(args, references, ctx, image, charge, cost)
        # A checked image travels as its prepared form only (its original can then be let go
        # of once stored); the provider's bytes go along only for the delivery to refuse.
        checked = replace(produced, content=b"", prepared=prepared) if prepared else produced
        return ToolOutput(
            payload=self._payload(args, references, min(cost, charge.meter.worst_case_micros)),
            files=(checked,),
        )

    async def _checked(self, image: ImageResult) -> PreparedImage | None:
        """The image checked and prepared for delivery while this call holds its AnswerGate
        slot; None when it is unusable (the delivery then says so and charges nothing)."""
        try:
            return await self._processor.validate_generated(image.data, image.mime_type)
        except MediaRejected:
            return None

    async def _generate(
        self,
        args: GenerateImageInput,
        references: list[tuple[StoredFileRef, tuple[bytes, str]]],
        ctx: ToolContext,
        price: int,
    ) -> tuple[ImageResult, PendingCharge]:
        async def call() -> ImageResult:
            await ctx.report_progress(_progress_line(args))
            ctx.chat_action("upload_photo")
            return await self._gateway.generate(
                args.prompt,
                aspect_ratio=args.aspect_ratio,
                image_size=args.image_size,
                references=[data for _, data in references],
                deadline=ctx.deadline,
            )

        model = self._gateway.model
        measure = ImageMeasure(
            self._prices.image_prices(model),
            args.image_size,
            list_price=price,
            price_version=self._prices.image_price_version(model),
            stop=ctx.stop,
        )
        try:
            return await self._metered.run(self._meter(args, ctx, price), call, measure)
        except (InsufficientBalance, ImageBlocked, ImageUnavailable) as exc:
            raise self._tool_error(exc, ctx, price, args.image_size) from None

    def _meter(self, args: GenerateImageInput, ctx: ToolContext, price: int) -> Meter:
        return Meter(
            user_id=ctx.user_id,
            provider=self._gateway.provider,
            model=self._gateway.model,
            purpose="generate_image",
            # The per-image price plus 25%: usage-based charges may come out above it.
            worst_case_micros=self._prices.image_hold(self._gateway.model, args.image_size),
            key=f"img:{ctx.tool_use_id}",
            tool_use_id=ctx.tool_use_id,
            image_size=args.image_size,
        )

    def _tool_error(
        self,
        exc: InsufficientBalance | ImageBlocked | ImageUnavailable,
        ctx: ToolContext,
        price: int,
        size: str,
    ) -> ToolError:
        if isinstance(exc, InsufficientBalance):
            return self._insufficient(exc, ctx, price, size)
        if isinstance(exc, ImageBlocked):
            log.info("image_not_generated", user_id=ctx.user_id, status="blocked", error=exc.reason)
            return ToolError(
                f"No image was generated: {exc.user_reason} ({exc.reason}). Nothing was charged."
            )
        log.info("image_not_generated", user_id=ctx.user_id, status="error", error=exc.kind)
        message = PROVIDER_MESSAGES.get(exc.kind, "the image service failed")
        if exc.kind == "model_gone":
            return ToolError(
                f"{message[0].upper()}{message[1:]}. Nothing was charged. Tell the user in "
                "plain words that image generation is unavailable right now; text chat works."
            )
        return ToolError(f"No image was generated: {message}. Nothing was charged.")

    def _insufficient(
        self, exc: InsufficientBalance, ctx: ToolContext, price: int, size: str
    ) -> ToolError:
        """In a group, Claude's answer is read by everyone: it is not told the balance."""
        held = self._prices.image_hold(self._gateway.model, size)
        costs = f"this image costs about {format_usd(self._metered.user_price(price))}"
        if ctx.chat_id != ctx.user_id:
            return ToolError(
                f"Insufficient balance: {costs} and the user's balance cannot cover it (do not "
                "state their balance in this group; they can top up with /buy in a private "
                "chat). Nothing was generated or charged."
            )
        return ToolError(
            f"Insufficient balance: {costs} "
            f"({format_usd(self._metered.user_price(held))} is reserved while it is made) "
            f"and the user has {format_usd(exc.available_micros)} available. "
            "Nothing was generated or charged."
        )

    def _payload(
        self,
        args: GenerateImageInput,
        references: list[tuple[StoredFileRef, tuple[bytes, str]]],
        cost: int,
    ) -> dict[str, Any]:
        return {
            "success": True,
            "cost_usd": format_usd(self._metered.user_price(cost)),
            "parameters_used": {
                "aspect_ratio": args.aspect_ratio,
                "image_size": args.image_size,
                "reference_file_ids": [str(r.id) for r, _ in references],
                "model": self._gateway.model,
            },
        }

    def _produced(
        self,
        args: GenerateImageInput,
        references: list[tuple[StoredFileRef, tuple[bytes, str]]],
        ctx: ToolContext,
        image: ImageResult,
        charge: PendingCharge,
        cost: int,
    ) -> ProducedFile:
        return ProducedFile(
            filename="image.png",
            content=image.data,
            mime_type=image.mime_type,
            image_size=args.image_size,
            metadata={
                "prompt": args.prompt,
                "model": image.model_version or self._gateway.model,
                "aspect_ratio": args.aspect_ratio,
                "image_size": args.image_size,
                "reference_file_ids": [r.id for r, _ in references],
                "cost_micros": cost,
                "tool_use_id": ctx.tool_use_id,
            },
            charge=charge,
        )

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


def _progress_line(args: GenerateImageInput) -> str:
    verb = "Editing" if args.reference_file_ids else "Generating"
    return f"{verb} a {args.image_size} image, {args.aspect_ratio}…"
