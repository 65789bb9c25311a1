"""Start-up settings: flags > environment (CONTAINMENT_*) > YAML file (--config) > defaults. Parsed once."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from rules.roles import AdminToken
from rules.taxonomy import DEFAULT_CATEGORIES


class SettingsError(Exception):
    """A bad configuration value; the message is one line naming the field."""


class HostPort(BaseModel):
    model_config = ConfigDict(frozen=True)

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_host_port(value: object) -> object:
    if not isinstance(value, str):
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("must be HOST:PORT with a port from 0 to 65535")
    return {"host": host.strip("[]") or "0.0.0.0", "port": int(port)}


def check_url(value: str) -> str:
    if not value.startswith(("http://", "https://")) or len(value.split("://", 1)[1]) == 0:
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


class RouteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    path_prefix: Annotated[str, Field(pattern=r"^/")]
    upstream: str
    models: list[str] | None = None

    _url = field_validator("upstream")(check_url)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONTAINMENT_", extra="forbid")

    listen: Annotated[HostPort, NoDecode, Field(validate_default=True)] = "0.0.0.0:8080"  # type: ignore[assignment]
    admin_listen: Annotated[HostPort, NoDecode, Field(validate_default=True)] = "127.0.0.1:8081"  # type: ignore[assignment]
    upstream: str | None = None
    routes: list[RouteConfig] = []
    redis_url: str | None = None
    redis_prefix: Annotated[str, Field(min_length=1, max_length=64)] = "{containment}:"
    redis_timeout_ms: Annotated[float, Field(gt=0, le=10_000)] = 500.0
    redis_poll_seconds: Annotated[float, Field(gt=0, le=300)] = 2.0
    ratelimit_sync_ms: Annotated[float, Field(ge=10, le=10_000)] = 100.0
    shutdown_grace_seconds: Annotated[float, Field(ge=0, le=3600)] = 10.0
    body_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 30.0
    client_write_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 60.0
    idle_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 75.0
    # data-plane connections at once (over it: 503 and close); None: half the open-file limit, less 128
    max_connections: Annotated[int, Field(ge=1, le=10_000_000)] | None = None
    # upstream connections per origin (one slow upstream never starves another), and how long a request
    # waits for one before 503 upstream_busy
    upstream_connections_per_origin: Annotated[int, Field(ge=1, le=1_000_000)] = 1024
    upstream_queue_seconds: Annotated[float, Field(gt=0, le=300)] = 2.0
    state_dir: Path = Path(".containment")
    admin_tokens: Annotated[list[AdminToken], NoDecode] = []
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    max_body_bytes: Annotated[int, Field(ge=1024, le=1 << 31)] = 16 * 1024 * 1024
    sample_rate: Annotated[float, Field(ge=0, le=1)] = 0.01
    sample_rates: dict[str, Annotated[float, Field(ge=0, le=1)]] = {}
    sample_max_count: Annotated[int, Field(ge=1, le=10_000_000)] = 10_000
    sample_max_age_hours: Annotated[float, Field(gt=0, le=24 * 365)] = 7 * 24
    sample_hmac_secret: str | None = None
    forensic_max_rate: Annotated[float, Field(ge=0, le=1)] = 1.0
    forensic_max_seconds: Annotated[int, Field(ge=0, le=30 * 86400)] = 4 * 3600
    max_response_scan_bytes: Annotated[int, Field(ge=1024, le=1 << 31)] = 16 * 1024 * 1024
    regex_budget_ms: Annotated[float, Field(gt=0, le=1000)] = 25.0
    # all the regex searches of one request, summed over its texts and views (past it: 503, fail closed)
    regex_request_budget_ms: Annotated[float, Field(gt=0, le=10_000)] = 200.0
    matcher_backend: Literal["auto", "ahocorasick", "hyperscan"] = "auto"
    tenants: dict[str, str] = {}
    trusted_proxies: Annotated[list[str], NoDecode] = []
    stage1_default_ttl_seconds: Annotated[int, Field(ge=0, le=10 * 365 * 86400)] = 72 * 3600
    history_versions: Annotated[int, Field(ge=1, le=100_000)] = 200
    extra_categories: Annotated[list[str], NoDecode] = []
    upstream_connect_timeout: Annotated[float, Field(gt=0, le=120)] = 5.0
    upstream_read_timeout: Annotated[float, Field(gt=0, le=3600)] = 300.0
    log_level: str = "info"

    _listen = field_validator("listen", "admin_listen", mode="before")(parse_host_port)

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, value: str | None) -> str | None:
        schemes = ("redis://", "rediss://", "unix://", "redis+sentinel://")
        if value is not None and not value.startswith(schemes):
            raise ValueError("must start with redis://, rediss://, unix:// or redis+sentinel://")
        return value

    @field_validator("upstream")
    @classmethod
    def _upstream(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value)

    @field_validator("admin_tokens", mode="before")
    @classmethod
    def _tokens(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [AdminToken.parse(item) for item in value.split(",") if item.strip()]
        if isinstance(value, list):
            return [AdminToken.parse(v) if isinstance(v, str) else v for v in value]
        return value

    @field_validator("tenants")
    @classmethod
    def _tenant_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key_id, tenant in value.items():
            if len(key_id) != 16 or any(c not in "0123456789abcdef" for c in key_id):
                raise ValueError(f"{key_id!r} is not a key id (16 lower-case hex characters of sha256(key))")
            if not tenant or len(tenant) > 128:
                raise ValueError(f"tenant name for {key_id} must be 1..128 characters")
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not a CIDR") from None
        return value

    def trusted_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(item, strict=False) for item in self.trusted_proxies)

    @field_validator("extra_categories", mode="before")
    @classmethod
    def _categories(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("matcher_backend")
    @classmethod
    def _backend(cls, value: str) -> str:
        if value == "hyperscan":
            from rules.literal_index import hyperscan_available

            if not hyperscan_available():
                raise ValueError("hyperscan is not installed (pip install 'containment-gateway[hyperscan]')")
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.upstream is None and not self.routes:
            raise ValueError("upstream: required unless routes are configured")
        names = [t.name for t in self.admin_tokens]
        if len(set(names)) != len(names):
            raise ValueError("admin_tokens: token names must be unique")
        return self

    @property
    def categories(self) -> frozenset[str]:
        return frozenset(DEFAULT_CATEGORIES) | frozenset(self.extra_categories)

    def effective_routes(self) -> list[RouteConfig]:
        """Configured routes, plus a catch-all `default` route to `--upstream` when one is given."""
        routes = list(self.routes)
        if self.upstream is not None and not any(r.path_prefix == "/" and not r.models for r in routes):
            routes.append(RouteConfig(name="default", path_prefix="/", upstream=self.upstream))
        return routes

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings)


def load_settings(flags: dict[str, Any], config_file: Path | None = None) -> Settings:
    """Flags (None = not given) over environment over the YAML file; SettingsError on anything bad."""
    values: dict[str, Any] = {}
    if config_file is not None:
        try:
            loaded = yaml.safe_load(config_file.read_text())
        except OSError as exc:
            raise SettingsError(f"config: cannot read {config_file}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise SettingsError(f"config: {config_file} is not valid YAML: {exc}".splitlines()[0]) from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise SettingsError(f"config: {config_file} must hold a mapping of settings")
        values.update({k.replace("-", "_"): v for k, v in (loaded or {}).items()})
    environ = {key.upper() for key in os.environ}
    for name in Settings.model_fields:
        if f"CONTAINMENT_{name.upper()}" in environ:
            values.pop(name, None)  # the environment beats the file
    values.update({k: v for k, v in flags.items() if v is not None})
    try:
        return Settings(**values)
    except ValidationError as exc:
        error = exc.errors()[0]
        message = error["msg"].removeprefix("Value error, ")
        if error["loc"]:
            message = ".".join(str(p) for p in error["loc"]) + ": " + message
        raise SettingsError(message) from None
    except ValueError as exc:  # raised from a settings source, such as a malformed environment value
        raise SettingsError(str(exc).splitlines()[0]) from None
