"""From settings to running parts: the broker and the pipelines a worker runs."""

from __future__ import annotations

from nearline.config import Settings
from nearline.config.worker import PipelineSettings, WorkerSettings
from nearline.core.errors import ConfigError
from nearline.worker.broker import Broker, Retention, StreamBound
from nearline.worker.handlers import HandlerNotFound, HandlerRegistry, default_registry
from nearline.worker.memory import MemoryBroker
from nearline.worker.pipeline import EntryFilter, Handler, Pipeline


def stream_bound(worker: WorkerSettings) -> StreamBound:
    """Producers' streams are bounded (``StreamFull``); the worker's own output is retained
    (trimmed, never refused), unless a pipeline reads it: then it is a source like any other."""
    sources = {pipeline.source for pipeline in worker.pipelines}
    results = Retention(max_len=worker.results_max_len, max_age_s=worker.results_max_age_s)
    dead_letters = Retention(max_len=worker.results_max_len)
    retained: dict[str, Retention] = {}
    for pipeline in worker.pipelines:
        if pipeline.results is not None and pipeline.results not in sources:
            retained[pipeline.results] = results
        dead = pipeline.dead_letter or f"{pipeline.source}:dead"
        if dead not in sources:
            retained[dead] = dead_letters
    return StreamBound(
        default=worker.stream_max_len, per_stream=dict(worker.stream_bounds), retained=retained
    )


async def open_broker(settings: Settings, kind: str | None = None) -> Broker:
    """The broker ``worker.broker`` (or ``kind``) names, connected."""
    worker = settings.worker
    kind = kind or worker.broker
    bound = stream_bound(worker)
    if kind == "memory":
        return MemoryBroker(bound)
    if kind == "redis":
        if settings.redis.url is None:
            raise ConfigError(
                "worker.broker: 'redis' needs redis.url (e.g. redis://127.0.0.1:6379/0)"
            )
        from nearline.worker.redis_streams import RedisStreamsBroker

        return RedisStreamsBroker.from_url(settings.redis.url, bound)
    if kind == "rabbitmq":
        try:
            from nearline.worker.rabbitmq import RabbitMQBroker
        except ModuleNotFoundError as exc:  # aio-pika is the rabbitmq extra
            from nearline.core.extras import missing_extra

            raise missing_extra("rabbitmq", "worker.broker: 'rabbitmq'", exc) from exc

        from nearline.worker.dedupe import dedupe_store

        return await RabbitMQBroker.connect(worker.rabbitmq_url, bound, dedupe_store(settings))
    if kind == "kafka":
        return await _open_kafka(settings, bound)
    raise ConfigError(f"worker.broker: unknown broker {kind!r} (memory, redis, rabbitmq, kafka)")


async def _open_kafka(settings: Settings, bound: StreamBound) -> Broker:
    if settings.redis.url is None:
        raise ConfigError(
            "worker.broker: 'kafka' needs redis.url too (e.g. redis://127.0.0.1:6379/0): the "
            "groups' partition leases, delivery counts and dedupe keys live in Redis"
        )
    try:
        from nearline.worker.kafka import KafkaBroker
    except ModuleNotFoundError as exc:  # aiokafka is the kafka extra
        from nearline.core.extras import missing_extra

        raise missing_extra("kafka", "worker.broker: 'kafka'", exc) from exc

    kafka = settings.kafka
    return await KafkaBroker.connect(
        kafka.bootstrap_servers,
        settings.redis.url,
        bound,
        partitions=kafka.partitions,
        key_field=kafka.key_field,
    )


def build_pipeline(
    spec: PipelineSettings, registry: HandlerRegistry = default_registry
) -> Pipeline:
    try:
        found = registry.resolve(spec.handler)
        handler: Handler = found(**spec.options) if spec.options is not None else found
        entry_filter: EntryFilter | None = (
            registry.resolve(spec.filter) if spec.filter is not None else None
        )
    except HandlerNotFound as exc:
        raise ConfigError(f"worker.pipelines.{spec.name}: {exc}") from exc
    return Pipeline(
        name=spec.name,
        source=spec.source,
        handler=handler,
        results=spec.results,
        filter=entry_filter,
        group=spec.group,
        max_batch=spec.max_batch,
        window_ms=spec.window_ms,
        max_deliveries=spec.max_deliveries,
        dead_letter=spec.dead_letter,
        concurrency=spec.concurrency,
        handler_timeout_ms=spec.handler_timeout_ms,
    )


def build_pipelines(
    worker: WorkerSettings, registry: HandlerRegistry = default_registry
) -> list[Pipeline]:
    return [build_pipeline(spec, registry) for spec in worker.pipelines]


async def close_handlers(pipelines: list[Pipeline]) -> None:
    """Close handlers that hold resources (an ``aclose`` coroutine method), e.g. Redis state."""
    for pipeline in pipelines:
        aclose = getattr(pipeline.handler, "aclose", None)
        if aclose is not None:
            await aclose()
