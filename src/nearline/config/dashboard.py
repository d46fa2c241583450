"""``dashboard:`` settings. The page itself needs none; worker lag needs the workers' URLs."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

HttpUrl = Annotated[str, Field(pattern=r"^https?://")]


class DashboardSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Each event worker's Prometheus endpoint, e.g. http://127.0.0.1:8091/metrics
    worker_metrics_urls: list[HttpUrl] = Field(default_factory=list)
    worker_scrape_timeout_s: float = Field(default=0.5, gt=0)
    # One scrape serves every open dashboard for this long.
    worker_scrape_interval_s: float = Field(default=1.0, ge=0)
