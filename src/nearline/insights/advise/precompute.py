"""What can be precomputed, mined from the log's questions.

The log's ``input`` column holds each request's messages as JSON when the gateway stores
content (``request_log.store_content``). The question is the last user message. Per route,
questions are clustered:

* identical wording (case and spacing ignored) is one question;
* paraphrases join when the MiniLM embeddings of their wordings have a cosine similarity at or
  above ``threshold`` — by default the semantic cache's ``hit_threshold`` (0.9625), so a
  cluster is what the semantic cache would answer as one question. Leader clustering: wordings
  from the most asked down, each joins the most similar existing leader at or above the
  threshold, else leads a new cluster.

A question asked more than once could have been answered ahead: their share of the traffic (a
Wilson interval) and of the spend, a ``warm`` file of the most asked ones (the JSON lines
``nearline warm FILE`` reads, checked with its own parser), and likely follow-ups: question A
then B from the same tenant within ``session_gap_s`` (the prefetcher's rule), at least
``min_transitions`` times and with probability at least ``min_probability``.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nearline.config import PrefetchSettings
from nearline.embed import Embedder
from nearline.gateway.warm import read_questions
from nearline.insights.advise.requestlog import RequestLogRecord
from nearline.insights.advise.stats import Interval, wilson


@dataclass(frozen=True, slots=True)
class QuestionCluster:
    route: str
    model: str
    question: str  # the most asked wording
    messages: str  # that wording's messages as JSON (the warm file's line)
    requests: int
    wordings: int
    cost_usd: float


@dataclass(frozen=True, slots=True)
class Clustering:
    """One route's questions: record index (in the route's records) -> cluster."""

    route: str
    labels: dict[int, int]
    clusters: tuple[QuestionCluster, ...]


@dataclass(frozen=True, slots=True)
class FollowUp:
    route: str
    first: str
    then: str
    times: int
    probability: float


@dataclass(frozen=True, slots=True)
class Precompute:
    threshold: float
    embedder: str | None  # None: identical wording only
    total_requests: int
    repeated: Interval  # share of requests with a question whose question is asked again
    cost_share: float  # the spend on those requests, of the spend on requests with a question
    top: tuple[QuestionCluster, ...]
    follow_ups: tuple[FollowUp, ...]
    warm_file: Path | None = None
    warm_questions: int = 0


def last_user_text(input_json: str) -> tuple[str, list[dict[str, Any]]] | None:
    """The last user message of a logged ``input`` and the messages; None without content."""
    if not input_json:
        return None
    try:
        messages = json.loads(input_json)
    except ValueError:
        return None
    if not isinstance(messages, list):
        return None
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            text = str(message.get("content") or "").strip()
            return (text, messages) if text else None
    return None


def _normal(text: str) -> str:
    return " ".join(text.split()).casefold()


def cluster_route(
    route: str,
    records: Sequence[RequestLogRecord],
    embedder: Embedder | None,
    threshold: float,
) -> Clustering:
    asked: dict[int, tuple[str, list[dict[str, Any]]]] = {}
    for index, record in enumerate(records):
        found = last_user_text(record.input)
        if found is not None:
            asked[index] = found
    counts = Counter(_normal(text) for text, _ in asked.values())
    wordings = [wording for wording, _ in counts.most_common()]
    leader_of = _leaders(wordings, embedder, threshold)
    labels = {index: leader_of[_normal(text)] for index, (text, _) in asked.items()}
    members: dict[int, list[int]] = defaultdict(list)
    for index, label in labels.items():
        members[label].append(index)
    clusters = []
    for label in sorted(members):
        indices = members[label]
        most = Counter(_normal(asked[i][0]) for i in indices).most_common(1)[0][0]
        shown = next(i for i in indices if _normal(asked[i][0]) == most)
        clusters.append(
            QuestionCluster(
                route=route,
                model=records[shown].model,
                question=asked[shown][0],
                messages=json.dumps(asked[shown][1], ensure_ascii=False),
                requests=len(indices),
                wordings=len({_normal(asked[i][0]) for i in indices}),
                cost_usd=sum(records[i].cost_usd for i in indices),
            )
        )
    return Clustering(route, labels, tuple(clusters))


def _leaders(wordings: list[str], embedder: Embedder | None, threshold: float) -> dict[str, int]:
    """Wording -> cluster label (the index of its leader among the leaders)."""
    if embedder is None or len(wordings) < 2:
        return {wording: index for index, wording in enumerate(wordings)}
    vectors = embedder.encode(wordings)
    leaders = np.zeros((len(wordings), vectors.shape[1]), dtype=np.float32)
    count = 0
    label: dict[str, int] = {}
    for wording, vector in zip(wordings, vectors, strict=True):
        if count:
            similarity = leaders[:count] @ vector
            best = int(np.argmax(similarity))
            if float(similarity[best]) >= threshold:
                label[wording] = best
                continue
        leaders[count] = vector
        label[wording] = count
        count += 1
    return label


def follow_ups(
    clustering: Clustering,
    records: Sequence[RequestLogRecord],
    settings: PrefetchSettings,
) -> tuple[FollowUp, ...]:
    transitions: dict[int, Counter[int]] = defaultdict(Counter)
    last: dict[str, tuple[int, float]] = {}
    for index in sorted(clustering.labels):
        record = records[index]
        at = record.started_at.timestamp()
        label = clustering.labels[index]
        before = last.get(record.tenant)
        if before is not None and at - before[1] <= settings.session_gap_s and before[0] != label:
            transitions[before[0]][label] += 1
        last[record.tenant] = (label, at)
    found = []
    for first, nexts in transitions.items():
        total = sum(nexts.values())
        for then, times in nexts.items():
            if times >= settings.min_transitions and times / total >= settings.min_probability:
                found.append(
                    FollowUp(
                        clustering.route,
                        clustering.clusters[first].question,
                        clustering.clusters[then].question,
                        times,
                        times / total,
                    )
                )
    return tuple(sorted(found, key=lambda f: (-f.times, -f.probability)))


def summarise(
    clusterings: Sequence[Clustering],
    follow: Sequence[FollowUp],
    *,
    total_requests: int,
    threshold: float,
    embedder: str | None,
    top: int,
) -> Precompute:
    clusters = [c for clustering in clusterings for c in clustering.clusters]
    asked = sum(c.requests for c in clusters)
    repeated = [c for c in clusters if c.requests > 1]
    spend = sum(c.cost_usd for c in clusters)
    return Precompute(
        threshold=threshold,
        embedder=embedder,
        total_requests=total_requests,
        repeated=wilson(sum(c.requests for c in repeated), asked),
        cost_share=sum(c.cost_usd for c in repeated) / spend if spend > 0 else 0.0,
        top=tuple(sorted(repeated, key=lambda c: (-c.requests, -c.cost_usd))[:top]),
        follow_ups=tuple(follow),
    )


def warm_lines(clusters: Sequence[QuestionCluster]) -> list[str]:
    """One JSON line per question; without a model (a foreign log) ``warm --model`` names it."""
    return [
        json.dumps(
            {**({"model": c.model} if c.model else {}), "messages": json.loads(c.messages)},
            ensure_ascii=False,
        )
        for c in clusters
    ]


def write_warm_file(path: Path, clusters: Sequence[QuestionCluster]) -> int:
    """Write the questions for ``nearline warm`` and check them with its own parser."""
    lines = warm_lines(clusters)
    questions, bad = read_questions(lines, "the --model of nearline warm")
    if bad:  # the warm command would refuse these lines: a bug here, not the user's
        raise ValueError(f"warm file line {bad[0].line}: {bad[0].reason}")
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(questions)
