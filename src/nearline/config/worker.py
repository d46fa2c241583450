"""The ``worker:`` section of nearline's settings: broker, bounds and pipelines.

Example (YAML)::

    redis: {url: "redis://127.0.0.1:6379/0"}
    worker:
      broker: redis
      stream_max_len: 100000
      results_max_len: 100000
      pipelines:
        - name: fraud
          source: transactions
          handler: nearline.worker.demo.fraud.handler:build_handler
          options: {model_path: fraud-model.joblib}
          results: decisions
          max_batch: 1000
          window_ms: 100
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from nearline.core.model import Strict as _Strict


class PipelineSettings(_Strict):
    """One pipeline; ``handler`` and ``filter`` name a registered handler or ``module:attr``.

    With ``options``, ``handler`` names a factory called with them that returns the handler.
    """

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    source: str = Field(min_length=1)
    handler: str = Field(min_length=1)
    options: dict[str, Any] | None = None
    filter: str | None = None
    results: str | None = None
    group: str | None = None
    dead_letter: str | None = None
    max_batch: int = Field(default=100, ge=1, le=100_000)
    window_ms: int = Field(default=100, ge=0, le=600_000)
    max_deliveries: int = Field(default=5, ge=1)
    concurrency: int = Field(default=1, ge=1, le=64)
    # a handler call that lasts longer fails its batch (null: no deadline)
    handler_timeout_ms: int | None = Field(default=60_000, ge=1)


class KafkaSettings(_Strict):
    """The top-level ``kafka:`` section: the cluster ``worker.broker: kafka`` uses (its groups'
    leases, delivery counts and dedupe keys live in Redis, ``redis.url``)."""

    bootstrap_servers: str = Field(default="127.0.0.1:9092", min_length=1)  # host:port[,...]
    partitions: int = Field(default=3, ge=1, le=1000)  # of the topics the worker creates
    # the data field whose value is a record's key (its partition); null: sticky partitions
    key_field: str | None = None


class WorkerSettings(_Strict):
    """How ``nearline worker`` connects and what it runs. Redis' URL is ``redis.url``, Kafka's
    servers the ``kafka:`` section."""

    broker: Literal["memory", "redis", "rabbitmq", "kafka"] = "memory"
    rabbitmq_url: str = Field(default="amqp://guest:guest@127.0.0.1:5672/", pattern=r"^amqps?://")
    # where RabbitMQ's dedupe keys of results live; null: redis when redis.url is set (a
    # killed worker's results are then not written twice), else memory
    dedupe: Literal["memory", "redis"] | None = None
    consumer_name: str | None = None  # default: <hostname>-<pid>
    reclaim_idle_ms: int = Field(default=30_000, ge=10)
    # a consumer idle this long and holding no entries is removed from its group (null: never)
    dead_consumer_retention_s: int | None = Field(default=3600, ge=1)
    # bound on every stream a producer writes (not the worker's results and dead letters)
    stream_max_len: int | None = Field(default=None, ge=1)
    stream_bounds: dict[str, int] = Field(default_factory=dict)  # per-stream bounds
    # retention of results streams (and the length of dead-letter streams): the oldest are
    # trimmed, never refused; dedupe keys of results expire after results_max_age_s
    results_max_len: int | None = Field(default=100_000, ge=1)
    results_max_age_s: int | None = Field(default=3600, ge=1)
    # after SIGTERM/SIGINT, how long batches in hand may take before they are abandoned
    shutdown_grace_ms: int = Field(default=10_000, ge=0)
    # a full results or dead-letter stream: wait this long, then give the batch back
    output_full_wait_ms: int = Field(default=30_000, ge=0)
    # HTTP ingest (POST /v1/streams/{source}/events with --http-port): bounds of one request
    ingest_max_events: int = Field(default=1000, ge=1, le=100_000)
    ingest_max_body_bytes: int = Field(default=1_000_000, ge=1024)
    pipelines: list[PipelineSettings] = Field(default_factory=list)
