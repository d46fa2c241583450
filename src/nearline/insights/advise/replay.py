"""The log's own insights on top of the decision: what can be precomputed (``precompute.py``)
and each path's mitigations replayed offline (``whatif.py``)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace
from pathlib import Path

from nearline.config import PrefetchSettings
from nearline.embed import Embedder
from nearline.insights.advise.advisor import Advice
from nearline.insights.advise.precompute import (
    Clustering,
    FollowUp,
    cluster_route,
    follow_ups,
    summarise,
    write_warm_file,
)
from nearline.insights.advise.requestlog import RouteMeasurement
from nearline.insights.advise.whatif import replay_path

WARM_TOP = 100


def with_log_insights(
    advice: Advice,
    measurements: Mapping[str, RouteMeasurement],
    *,
    embedder: Embedder | None,
    threshold: float,
    warm_file: Path | None = None,
    warm_top: int = WARM_TOP,
    prefetch: PrefetchSettings | None = None,
    plan_models: Collection[str] = (),
) -> Advice:
    prefetch = prefetch or PrefetchSettings()
    clusterings: dict[str, Clustering] = {}
    follow: list[FollowUp] = []
    for route, m in measurements.items():
        if any(record.input for record in m.records):
            clustering = cluster_route(route, m.records, embedder, threshold)
            clusterings[route] = clustering
            follow.extend(follow_ups(clustering, m.records, prefetch))
    paths = tuple(
        replace(
            path,
            actions=replay_path(
                path,
                advice.profile.policy,
                clustering=clusterings.get(path.path.name),
                measurements=measurements,
                prefetch=prefetch,
                plan_models=plan_models,
            ),
        )
        for path in advice.paths
    )
    precompute = None
    if clusterings:
        precompute = summarise(
            list(clusterings.values()),
            follow,
            total_requests=sum(m.requests for m in measurements.values()),
            threshold=threshold,
            embedder=None if embedder is None else embedder.name,
            top=warm_top,
        )
        if warm_file is not None:
            written = write_warm_file(warm_file, precompute.top)
            precompute = replace(precompute, warm_file=warm_file, warm_questions=written)
    return replace(advice, paths=paths, precompute=precompute)
