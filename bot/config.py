"""Settings: secrets from files in SECRETS_DIR (Docker secrets) or the environment."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from bot.secret_files import (
    SECRET_NAMES,
    SecretFilesSource,
    missing_secret_message,
    secret_source,
    secrets_dir,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

DEFAULT_IMAGE_MODELS = {"google": "gemini-3-pro-image", "openai": "gpt-image-2.6-sunburst"}
# What aiogram accepts as a token: digits, a colon, then a non-empty rest without spaces.
_TOKEN_SHAPE = re.compile(r"\d+:\S+")


def _split_ids(value: object) -> list[int]:
    if value is None or value == "":
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, str):
        return [int(part) for part in value.replace(";", ",").split(",") if part.strip()]
    if isinstance(value, list | tuple | set):
        return [int(part) for part in value]
    raise ValueError("expected comma-separated Telegram user ids")


class OperatorSettings(BaseSettings):
    """Every non-secret setting. Names are the public configuration contract (see README)."""

    model_config = SettingsConfigDict(
        case_sensitive=True, env_ignore_empty=True, extra="ignore", frozen=True
    )

    # Infrastructure
    DATABASE_URL: SecretStr | None = None
    # The password for DATABASE_URL, from the secret file `database_password` (so it never sits in
    # an environment variable); it replaces any password in the URL.
    DATABASE_PASSWORD: SecretStr | None = None
    DATA_DIR: Path = Path("data")
    TELEGRAM_API_URL: str | None = None
    ANTHROPIC_BASE_URL: str | None = None
    GEMINI_BASE_URL: str | None = None
    OPENAI_BASE_URL: str | None = None

    # Models
    CLAUDE_MODEL: str = "claude-sonnet-5-5"
    VISION_MODEL: str | None = None
    IMAGE_PROVIDER: Literal["google", "openai"] = "google"
    # Empty means the provider's default (DEFAULT_IMAGE_MODELS).
    IMAGE_MODEL: str = ""
    TRANSCRIBE_MODEL: str = "gemini-3.5-flash"
    CHAT_MODELS: Annotated[list[str], NoDecode] = Field(default_factory=list)
    PRICES_FILE: Path | None = None
    CLAUDE_MAX_TOKENS: int = Field(default=4096, ge=256, le=64000)
    VISION_MAX_TOKENS: int = Field(default=1024, ge=128, le=16000)
    CONTEXT_TOKEN_BUDGET: int = Field(default=60_000, ge=2_000)
    MAX_TOOL_ITERATIONS: int = Field(default=8, ge=1, le=32)

    # Access and money
    ADMIN_USER_IDS: Annotated[list[int], NoDecode] = Field(default_factory=list)
    ALLOWED_USER_IDS: Annotated[list[int], NoDecode] = Field(default_factory=list)
    STARTER_BALANCE_USD: Decimal = Field(default=Decimal("0.50"), ge=0)
    PRICE_MARKUP: Decimal = Field(default=Decimal("1.0"), ge=Decimal("1.0"))
    HOLD_TTL_SECONDS: int = Field(default=900, ge=60)

    # Time limits and retries
    TURN_TIMEOUT_SECONDS: float = Field(default=240.0, gt=0)
    ANTHROPIC_TIMEOUT_SECONDS: float = Field(default=120.0, gt=0)
    ANTHROPIC_MAX_RETRIES: int = Field(default=2, ge=0, le=5)
    GEMINI_TIMEOUT_SECONDS: float = Field(default=150.0, gt=0)
    GEMINI_RETRY_ATTEMPTS: int = Field(default=3, ge=1, le=6)
    GEMINI_RETRY_INITIAL_DELAY: float = Field(default=1.0, ge=0)
    OPENAI_TIMEOUT_SECONDS: float = Field(default=150.0, gt=0)
    OPENAI_RETRY_ATTEMPTS: int = Field(default=3, ge=1, le=6)
    OPENAI_RETRY_INITIAL_DELAY: float = Field(default=1.0, ge=0)
    # gpt-image-2 and later take any WxH (sides divisible by 16); older models only the standard
    # 1024x1024, 1536x1024 and 1024x1536.
    OPENAI_IMAGE_SIZES: Literal["flexible", "standard"] = "flexible"
    SHUTDOWN_GRACE_SECONDS: float = Field(default=25.0, ge=0)
    TELEGRAM_RETRY_MAX_SECONDS: float = Field(default=60.0, ge=0)
    # Outgoing pacing under Telegram's limits (about 1 message/s per chat, 30/s overall).
    TELEGRAM_CHAT_RATE: float = Field(default=1.0, gt=0)
    TELEGRAM_GLOBAL_RATE: float = Field(default=30.0, gt=0)
    POLLING_TIMEOUT_SECONDS: int = Field(default=25, ge=0, le=50)

    # Consumption caps
    RATE_LIMIT_MESSAGES_PER_MINUTE: int = Field(default=20, ge=1)
    RATE_LIMIT_IMAGES_PER_HOUR: int = Field(default=30, ge=1)
    MAX_CONCURRENT_PROVIDER_CALLS: int = Field(default=64, ge=1)
    MERGE_WINDOW_SECONDS: float = Field(default=0.6, ge=0)
    DRAFT_INTERVAL_SECONDS: float = Field(default=0.5, ge=0)

    # Files
    MAX_UPLOAD_MB: int = Field(default=20, ge=1, le=20)
    MAX_IMAGE_PIXELS: int = Field(default=40_000_000, ge=1_000_000)
    FILE_RETENTION_DAYS: int = Field(default=30, ge=1, le=90)
    BLOB_RETENTION_DAYS: int = Field(default=90, ge=1)
    RECENT_FILES_IN_CONTEXT: int = Field(default=12, ge=0, le=50)
    FILE_HOUSEKEEPING_INTERVAL_SECONDS: float = Field(default=3600.0, gt=0)
    # How often inbox rows older than the 7-day duplicate window are deleted.
    INBOX_PURGE_INTERVAL_SECONDS: float = Field(default=3600.0, gt=0)

    # Payments and the person's own controls (design section 10)
    STAR_VALUE_USD: Decimal = Field(default=Decimal("0.013"), gt=0)
    STAR_PACKAGES: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: [50, 100, 250, 500, 1000]
    )
    REFUND_WINDOW_DAYS: int = Field(default=21, ge=0, le=90)
    LOW_BALANCE_USD: Decimal = Field(default=Decimal("0.20"), ge=0)
    CONFIRM_ABOVE_USD: Decimal = Field(default=Decimal("0.20"), ge=0)
    CONFIRM_TIMEOUT_SECONDS: float = Field(default=120.0, gt=0, le=600)
    TEXTS_DIR: Path | None = None
    STARS_RECONCILE_INTERVAL_SECONDS: float = Field(default=3600.0, gt=0)

    # Abilities
    WEB_TOOLS: Literal["on", "off"] = "on"
    GROUPS: Literal["off", "mention"] = "mention"
    MAX_AUDIO_SECONDS: int = Field(default=600, ge=1, le=3600)

    # Scale and operations (design section 12)
    BOT_MODE: Literal["polling", "webhook"] = "polling"
    WEBHOOK_URL: str | None = None
    WEBHOOK_LISTEN: str | None = None
    # Webhook mode: a replica silent this long is taken for dead (its turns handed back).
    REPLICA_LEASE_SECONDS: float = Field(default=30.0, ge=3.0, le=45.0)
    BLOB_STORE_URL: str | None = None
    S3_ENDPOINT_URL: str | None = None
    METRICS_LISTEN: str | None = None

    # Logging
    LOG_FORMAT: Literal["console", "json"] | None = None
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("ADMIN_USER_IDS", "ALLOWED_USER_IDS", mode="before")
    @classmethod
    def _parse_ids(cls, value: object) -> list[int]:
        return _split_ids(value)

    @field_validator("CHAT_MODELS", mode="before")
    @classmethod
    def _parse_models(cls, value: object) -> list[str]:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return list(value) if isinstance(value, list | tuple) else []

    @field_validator("STAR_PACKAGES", mode="before")
    @classmethod
    def _parse_packages(cls, value: object) -> list[int]:
        packages = _split_ids(value)
        if not packages or any(not 1 <= stars <= 10_000 for stars in packages):
            raise ValueError("expected comma-separated Star amounts from 1 to 10000")
        return packages

    @model_validator(mode="after")
    def _default_image_model(self) -> OperatorSettings:
        if not self.IMAGE_MODEL:
            object.__setattr__(self, "IMAGE_MODEL", DEFAULT_IMAGE_MODELS[self.IMAGE_PROVIDER])
        return self

    @field_validator("TELEGRAM_API_URL", "ANTHROPIC_BASE_URL", "GEMINI_BASE_URL", "OPENAI_BASE_URL")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, SecretFilesSource(settings_cls, Path(secrets_dir()))

    def database_url(self) -> URL | None:
        """DATABASE_URL with DATABASE_PASSWORD put in (URL.create escapes `@`, `/`, `:`); None when
        unset (the embedded Postgres)."""
        if self.DATABASE_URL is None:
            return None
        from sqlalchemy.engine import URL, make_url

        url = make_url(self.DATABASE_URL.get_secret_value())
        if self.DATABASE_PASSWORD is None:
            return url
        return URL.create(
            drivername=url.drivername,
            username=url.username,
            password=self.DATABASE_PASSWORD.get_secret_value(),
            host=url.host,
            port=url.port,
            database=url.database,
            query=url.query,
        )

    @property
    def vision_model(self) -> str:
        return self.VISION_MODEL or self.CLAUDE_MODEL

    @property
    def chat_models(self) -> list[str]:
        """The models a person may choose; the default model is always among them."""
        models = list(self.CHAT_MODELS) or [self.CLAUDE_MODEL]
        return models if self.CLAUDE_MODEL in models else [self.CLAUDE_MODEL, *models]

    @property
    def starter_balance_micros(self) -> int:
        return usd_to_micros(self.STARTER_BALANCE_USD)

    @property
    def max_upload_bytes(self) -> int:
        return self.MAX_UPLOAD_MB * 1024 * 1024

    @property
    def files_dir(self) -> Path:
        return self.DATA_DIR / "files"

    @property
    def texts_dir(self) -> Path:
        """Where the operator's /paysupport, /terms and /privacy texts are (design section 10)."""
        return self.TEXTS_DIR if self.TEXTS_DIR is not None else self.DATA_DIR / "texts"

    @property
    def star_value_micros(self) -> int:
        return usd_to_micros(self.STAR_VALUE_USD)

    @property
    def postgres_dir(self) -> Path:
        return self.DATA_DIR / "postgres"


class Settings(OperatorSettings):
    """All settings, including the three secrets the running bot needs."""

    TELEGRAM_BOT_TOKEN: SecretStr
    ANTHROPIC_API_KEY: SecretStr
    GOOGLE_API_KEY: SecretStr
    OPENAI_API_KEY: SecretStr | None = None
    WEBHOOK_SECRET: SecretStr | None = None
    S3_ACCESS_KEY_ID: SecretStr | None = None
    S3_SECRET_ACCESS_KEY: SecretStr | None = None

    @field_validator("TELEGRAM_BOT_TOKEN")
    @classmethod
    def _token_shape(cls, value: SecretStr) -> SecretStr:
        if not _TOKEN_SHAPE.fullmatch(value.get_secret_value()):
            raise ValueError("not a bot token")
        return value


def usd_to_micros(amount: Decimal) -> int:
    """Exact dollars to micro-USD; more than six decimals is refused rather than rounded."""
    micros = amount * 1_000_000
    if micros != micros.to_integral_value():
        raise ValueError("amounts have at most six decimal places")
    return int(micros)


class ConfigurationError(Exception):
    """A problem the operator must fix, described in one line."""


def load_settings(**overrides: Any) -> Settings:
    """Build Settings, turning a missing secret or bad value into one readable line."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise ConfigurationError(describe_validation_error(exc)) from None
    if settings.IMAGE_PROVIDER == "openai" and settings.OPENAI_API_KEY is None:
        raise ConfigurationError(
            missing_secret_message("OPENAI_API_KEY") + " It is needed with IMAGE_PROVIDER=openai."
        )
    problem = webhook_problem(settings)
    if problem is not None:
        raise ConfigurationError(problem)
    return settings


class TelegramOperatorSettings(OperatorSettings):
    """Operator commands that talk to Telegram (`admin stars-reconcile`) need the bot token."""

    TELEGRAM_BOT_TOKEN: SecretStr


def load_telegram_operator_settings() -> TelegramOperatorSettings:
    try:
        return TelegramOperatorSettings()
    except ValidationError as exc:
        raise ConfigurationError(describe_validation_error(exc)) from None


def webhook_problem(settings: Settings) -> str | None:
    """Webhook mode needs the public URL and the secret Telegram echoes (design section 12)."""
    if settings.BOT_MODE != "webhook":
        return None
    missing = []
    if not settings.WEBHOOK_URL:
        missing.append("the setting WEBHOOK_URL (the public https URL Telegram posts to)")
    if settings.WEBHOOK_SECRET is None or not settings.WEBHOOK_SECRET.get_secret_value():
        missing.append(
            f"the secret WEBHOOK_SECRET (file {secrets_dir()}/webhook_secret, or the environment "
            "variable; 1-256 characters A-Z a-z 0-9 _ -)"
        )
    if missing:
        return "BOT_MODE=webhook needs " + " and ".join(missing) + "."
    return None


def load_operator_settings() -> OperatorSettings:
    """Settings for operator commands, which need the database but no provider secrets."""
    try:
        return OperatorSettings()
    except ValidationError as exc:
        raise ConfigurationError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """One line for the operator: every missing secret at once, else the first bad setting."""
    errors = exc.errors()
    names = [str(error["loc"][0]) if error["loc"] else "?" for error in errors]
    missing = [
        name
        for name, error in zip(names, errors, strict=True)
        if error["type"] == "missing" and name in SECRET_NAMES
    ]
    if missing:
        files = ", ".join(f"{name.lower()}" for name in missing)
        noun = "secret" if len(missing) == 1 else "secrets"
        return (
            f"Missing {noun} {', '.join(missing)}: put each in a file in {secrets_dir()}/ "
            f"named in lower case ({files}, optionally with .txt), "
            "or set the environment variable of the same name."
        )
    name, first = names[0], errors[0]
    if name == "TELEGRAM_BOT_TOKEN":
        return (
            f"Invalid setting TELEGRAM_BOT_TOKEN: the value from {secret_source(name)} is not a "
            "bot token (digits, a colon, then the rest, as @BotFather gives it); check that "
            "file or variable."
        )
    return f"Invalid setting {name}: {first['msg']}."


def parse_listen(value: str) -> tuple[str, int]:
    """A ``host:port`` setting (METRICS_LISTEN, WEBHOOK_LISTEN); ``:port`` means every interface."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected host:port, got {value!r}")
    return host or "0.0.0.0", int(port)
