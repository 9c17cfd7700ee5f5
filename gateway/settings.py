"""Process settings, read from the environment (and `.env`) once, in the app factory."""
from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _env(name: str) -> AliasChoices:
    """Accept both the documented environment name and the field name (tests pass the latter)."""
    return AliasChoices(name, name.lower())


class Settings(BaseSettings):
    """The SPEC §3 table; every other knob is in the TOML config file."""

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", populate_by_name=True, frozen=True
    )

    twilio_account_sid: str | None = Field(None, validation_alias=_env("TWILIO_ACCOUNT_SID"))
    twilio_auth_token: SecretStr | None = Field(None, validation_alias=_env("TWILIO_AUTH_TOKEN"))
    database_url: str = Field("sqlite:///gateway.db", validation_alias=_env("GATEWAY_DATABASE_URL"))
    config_path: Path = Field(Path("gateway.toml"), validation_alias=_env("GATEWAY_CONFIG"))
    public_url: str | None = Field(None, validation_alias=_env("GATEWAY_PUBLIC_URL"))
    trusted_proxies: int = Field(0, ge=0, le=10, validation_alias=_env("GATEWAY_TRUSTED_PROXIES"))
    console_password_hash: str | None = Field(
        None, validation_alias=_env("GATEWAY_CONSOLE_PASSWORD_HASH")
    )
    secret_key: SecretStr | None = Field(None, validation_alias=_env("GATEWAY_SECRET_KEY"))
    twilio_timeout_seconds: float = Field(
        5.0, gt=0, le=14, validation_alias=_env("GATEWAY_TWILIO_TIMEOUT")
    )
    #: Where webhooks keep what they could not store while the database was down (docs/reliability.md).
    spool_dir: Path = Field(Path("spool"), validation_alias=_env("GATEWAY_SPOOL_DIR"))
    #: How long a request waits for a locked SQLite file or a PostgreSQL connection before failing
    #: open; well under Twilio's 15 s, so the caller still gets the configured TwiML in time.
    database_busy_timeout: float = Field(
        5.0, gt=0, le=10, validation_alias=_env("GATEWAY_DATABASE_BUSY_TIMEOUT")
    )
    #: How many days `gateway deliver` keeps events and their deliveries (docs/events.md).
    events_retention_days: int = Field(30, validation_alias=_env("GATEWAY_EVENTS_RETENTION_DAYS"))

    @field_validator("database_url")
    @classmethod
    def _use_psycopg3(cls, url: str) -> str:
        """PostgreSQL URLs as Heroku-style providers hand them out must use the psycopg 3 driver."""
        for prefix in ("postgres://", "postgresql://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix):]
        return url

    @field_validator("events_retention_days")
    @classmethod
    def _past_a_day(cls, days: int) -> int:
        """Events are retried, and looked at by the publisher, for 24 hours: keep them longer than that."""
        if days < 2:
            raise ValueError("must be 2 or more (days): deliveries are retried, and new events looked for, over 24 hours")
        return days

    @field_validator("public_url")
    @classmethod
    def _no_trailing_slash(cls, url: str | None) -> str | None:
        """Twilio signs the exact URL it calls; a doubled slash would break every signature."""
        if url is None or not url.strip():
            return None
        if not url.startswith(("http://", "https://")):
            raise ValueError("must start with https:// (or http://), like https://gateway.example.com")
        return url.rstrip("/")

    @property
    def auth_token(self) -> str | None:
        """The Twilio auth token as plain text, or None when it is not configured.

        Blank counts as not configured: a token of spaces (a stray `TWILIO_AUTH_TOKEN= ` line)
        would otherwise become a secret anyone can guess and sign webhooks with.
        """
        if self.twilio_auth_token is None or not self.twilio_auth_token.get_secret_value().strip():
            return None
        return self.twilio_auth_token.get_secret_value()


class SettingsError(SystemExit):
    """Bad settings, one line each: `VARIABLE: what is wrong`.

    A SystemExit, as ConfigError is: left uncaught (gunicorn importing app.py) the process
    stops with those lines and status 1, not pydantic's traceback.
    """

    def __str__(self) -> str:
        return str(self.code)


def load_settings() -> Settings:
    """The settings from the environment and .env, or SettingsError naming each bad variable."""
    try:
        return Settings()
    except ValidationError as error:
        lines = (
            f"{'.'.join(map(str, problem['loc']))}: {problem['msg'].removeprefix('Value error, ')}"
            for problem in error.errors()
        )
        raise SettingsError("\n".join(lines)) from None
