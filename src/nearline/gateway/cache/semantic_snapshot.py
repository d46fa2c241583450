"""A replica's semantic index on disk: the ANN graphs, the entry catalog, the feed position.

Written as a directory (``index/`` from :class:`PartitionedIndex`, ``catalog.json`` with
the learned thresholds' evidence as of the same feed position) and
swapped in by a rename, so a crash mid-write leaves the previous snapshot intact.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from nearline.gateway.cache.ann_index import PartitionedIndex

CATALOG_FORMAT = 1


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """What the cache keeps in memory per entry, beside its vector."""

    partition: str
    query: str
    expires_at: float


Catalog = dict[int, CatalogEntry]


@dataclass(frozen=True, slots=True)
class Snapshot:
    index: PartitionedIndex
    catalog: Catalog
    position: str
    namespace: str
    learned: dict[str, Any] | None = None  # LearnedThresholds.to_document(), at ``position``


def write_snapshot(
    directory: Path,
    index: PartitionedIndex,
    catalog: Catalog,
    position: str,
    namespace: str,
    learned: dict[str, Any] | None = None,
) -> None:
    staging = directory.with_name(directory.name + ".writing")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    index.save(staging / "index")
    document = {
        "format": CATALOG_FORMAT,
        "position": position,
        "namespace": namespace,
        "entries": [
            [entry_id, entry.partition, entry.query, entry.expires_at]
            for entry_id, entry in catalog.items()
        ],
        "learned": learned,
    }
    (staging / "catalog.json").write_bytes(orjson.dumps(document))
    previous = directory.with_name(directory.name + ".previous")
    if previous.exists():
        shutil.rmtree(previous)
    if directory.exists():
        directory.rename(previous)
    staging.rename(directory)
    if previous.exists():
        shutil.rmtree(previous)


def read_snapshot(directory: Path) -> Snapshot:
    """Load a snapshot; ``ValueError`` if it is missing, damaged or of another format."""
    try:
        document = orjson.loads((directory / "catalog.json").read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"no readable catalog in {directory}: {exc}") from exc
    if document.get("format") != CATALOG_FORMAT:
        raise ValueError(f"catalog format {document.get('format')} is not supported")
    index = PartitionedIndex.load(directory / "index")
    catalog: Catalog = {
        int(entry_id): CatalogEntry(str(partition), str(query), float(expires_at))
        for entry_id, partition, query, expires_at in document["entries"]
    }
    if len(catalog) != len(index) or any(entry_id not in index for entry_id in catalog):
        raise ValueError("snapshot catalog and index disagree")
    learned = document.get("learned")
    return Snapshot(
        index,
        catalog,
        str(document["position"]),
        str(document["namespace"]),
        learned if isinstance(learned, dict) else None,
    )
