"""Nearest-neighbour search over unit vectors, one independent index per partition.

A partition (tenant + model + system prompt + parameters + conversation context, see
:mod:`nearline.gateway.cache.partition`) is searched on its own, so an entry can never be returned
for another partition's query. Small partitions — most of them: every multi-turn context is
its own — are searched exactly with one matrix-vector product; a partition that grows past
``hnsw_threshold`` entries moves to an HNSW graph (hnswlib, inner product on unit vectors =
cosine similarity), which keeps search sub-millisecond at 100,000 entries.

:class:`PartitionedIndex` is synchronous and not thread-safe: the semantic cache drives it
from one dedicated thread. It saves to and loads from a directory snapshot, so a restarted
replica does not rebuild graphs (minutes at a million entries) but reads them back (seconds).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import hnswlib
import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64]

SNAPSHOT_FORMAT = 1


@dataclass(frozen=True, slots=True)
class Neighbour:
    label: int
    similarity: float


@dataclass(frozen=True, slots=True)
class HnswParams:
    """HNSW graph settings: ``m`` links per node, ``ef_construction`` and query ``ef``."""

    m: int = 16
    ef_construction: int = 100
    ef_search: int = 64


class _PartitionIndex(Protocol):
    kind: str

    def __len__(self) -> int: ...
    def add(self, labels: Labels, vectors: Vector) -> None: ...
    def remove(self, label: int) -> bool: ...
    def search(self, vector: Vector, k: int) -> list[Neighbour]: ...
    def labels(self) -> Labels: ...
    def vectors(self) -> Vector: ...


class _FlatPartition:
    """Exact search: a dense matrix of rows, removal by moving the last row into the hole."""

    kind = "flat"

    def __init__(self, dim: int) -> None:
        self._dim = dim
        self._matrix = np.zeros((8, dim), dtype=np.float32)
        self._labels = np.zeros(8, dtype=np.int64)
        self._row_of: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._row_of)

    def add(self, labels: Labels, vectors: Vector) -> None:
        for label, vector in zip(labels.tolist(), vectors, strict=True):
            row = self._row_of.get(label)
            if row is None:
                row = len(self._row_of)
                self._grow_to(row + 1)
                self._row_of[label] = row
                self._labels[row] = label
            self._matrix[row] = vector

    def remove(self, label: int) -> bool:
        row = self._row_of.pop(label, None)
        if row is None:
            return False
        last = len(self._row_of)
        if row != last:
            moved = int(self._labels[last])
            self._matrix[row] = self._matrix[last]
            self._labels[row] = moved
            self._row_of[moved] = row
        return True

    def search(self, vector: Vector, k: int) -> list[Neighbour]:
        count = len(self._row_of)
        if count == 0:
            return []
        similarities = self._matrix[:count] @ vector
        k = min(k, count)
        top = np.argpartition(-similarities, k - 1)[:k]
        top = top[np.argsort(-similarities[top])]
        return [Neighbour(int(self._labels[i]), float(similarities[i])) for i in top]

    def labels(self) -> Labels:
        return self._labels[: len(self._row_of)].copy()

    def vectors(self) -> Vector:
        return self._matrix[: len(self._row_of)].copy()

    def _grow_to(self, rows: int) -> None:
        if rows <= len(self._labels):
            return
        capacity = max(rows, 2 * len(self._labels))
        matrix = np.zeros((capacity, self._dim), dtype=np.float32)
        matrix[: len(self._matrix)] = self._matrix
        labels = np.zeros(capacity, dtype=np.int64)
        labels[: len(self._labels)] = self._labels
        self._matrix, self._labels = matrix, labels


class _HnswPartition:
    """Approximate search on an HNSW graph; removed labels are marked and their slots reused."""

    kind = "hnsw"

    def __init__(self, dim: int, params: HnswParams, capacity: int = 1024) -> None:
        self._dim = dim
        self._params = params
        self._graph = hnswlib.Index(space="ip", dim=dim)
        self._graph.init_index(
            max_elements=capacity,
            ef_construction=params.ef_construction,
            M=params.m,
            allow_replace_deleted=True,
        )
        self._configure()
        self._live: set[int] = set()

    @classmethod
    def load(cls, path: Path, dim: int, params: HnswParams, live: Labels) -> _HnswPartition:
        partition = cls.__new__(cls)
        partition._dim = dim
        partition._params = params
        partition._graph = hnswlib.Index(space="ip", dim=dim)
        partition._graph.load_index(str(path), allow_replace_deleted=True)
        partition._configure()
        partition._live = set(live.tolist())
        return partition

    def _configure(self) -> None:
        self._graph.set_ef(self._params.ef_search)
        self._graph.set_num_threads(1)

    def __len__(self) -> int:
        return len(self._live)

    def add(self, labels: Labels, vectors: Vector) -> None:
        fresh = [i for i, label in enumerate(labels.tolist()) if label not in self._live]
        stale = [i for i, label in enumerate(labels.tolist()) if label in self._live]
        for i in stale:  # an update: hnswlib overwrites the vector of an existing label
            self._graph.add_items(vectors[i : i + 1], labels[i : i + 1])
        if not fresh:
            return
        needed = len(self._live) + len(fresh)
        capacity = int(self._graph.get_max_elements())
        if needed > capacity:
            self._graph.resize_index(max(needed, 2 * capacity))
        self._graph.add_items(vectors[fresh], labels[fresh], replace_deleted=True)
        self._live.update(labels[fresh].tolist())

    def remove(self, label: int) -> bool:
        if label not in self._live:
            return False
        self._graph.mark_deleted(label)
        self._live.discard(label)
        return True

    def search(self, vector: Vector, k: int) -> list[Neighbour]:
        k = min(k, len(self._live))
        while k > 0:
            try:
                found, distances = self._graph.knn_query(vector, k=k)
            except RuntimeError:  # too few reachable live nodes for k: ask for fewer
                k //= 2
                continue
            return [
                Neighbour(int(label), 1.0 - float(distance))
                for label, distance in zip(found[0], distances[0], strict=True)
            ]
        return []

    def labels(self) -> Labels:
        return np.fromiter(self._live, dtype=np.int64, count=len(self._live))

    def vectors(self) -> Vector:
        labels = self.labels()
        if len(labels) == 0:
            return np.zeros((0, self._dim), dtype=np.float32)
        return np.asarray(self._graph.get_items(labels), dtype=np.float32)

    def save(self, path: Path) -> None:
        self._graph.save_index(str(path))


class PartitionedIndex:
    """Labelled unit vectors grouped by partition key; search never crosses partitions."""

    def __init__(
        self,
        dim: int,
        *,
        hnsw_threshold: int = 2048,
        hnsw: HnswParams | None = None,
    ) -> None:
        self.dim = dim
        self.hnsw_threshold = hnsw_threshold
        self.hnsw = hnsw or HnswParams()
        self._partitions: dict[str, _PartitionIndex] = {}
        self._partition_of: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._partition_of)

    def __contains__(self, label: int) -> bool:
        return label in self._partition_of

    def partition_of(self, label: int) -> str | None:
        return self._partition_of.get(label)

    def partition_sizes(self) -> dict[str, int]:
        return {key: len(index) for key, index in self._partitions.items()}

    def add(self, partition: str, labels: Iterable[int], vectors: Vector) -> None:
        """Add (or overwrite) labelled rows of ``vectors`` in ``partition``."""
        label_array = np.fromiter(labels, dtype=np.int64)
        rows = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if len(label_array) != len(rows):
            raise ValueError("labels and vectors differ in length")
        for label in label_array.tolist():  # a label that moved partition leaves the old one
            previous = self._partition_of.get(label)
            if previous is not None and previous != partition:
                self.remove(label)
        index = self._partitions.get(partition)
        if index is None:
            index = _FlatPartition(self.dim)
            self._partitions[partition] = index
        index.add(label_array, rows)
        for label in label_array.tolist():
            self._partition_of[label] = partition
        if index.kind == "flat" and len(index) > self.hnsw_threshold:
            self._partitions[partition] = self._to_hnsw(index)

    def remove(self, label: int) -> bool:
        partition = self._partition_of.pop(label, None)
        if partition is None:
            return False
        index = self._partitions[partition]
        index.remove(label)
        if len(index) == 0:
            del self._partitions[partition]
        return True

    def remove_partitions(self, keys: Iterable[str]) -> list[int]:
        """Drop whole partitions; returns the labels that were in them."""
        removed: list[int] = []
        for key in list(keys):
            index = self._partitions.pop(key, None)
            if index is None:
                continue
            labels = index.labels().tolist()
            for label in labels:
                self._partition_of.pop(label, None)
            removed.extend(labels)
        return removed

    def search(self, partition: str, vector: Vector, k: int = 4) -> list[Neighbour]:
        """The ``k`` most similar live entries of ``partition``, most similar first."""
        index = self._partitions.get(partition)
        if index is None or k < 1:
            return []
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(self.dim)
        return index.search(query, k)

    def partitions(self) -> Iterator[str]:
        return iter(list(self._partitions))

    def _to_hnsw(self, flat: _PartitionIndex) -> _HnswPartition:
        graph = _HnswPartition(self.dim, self.hnsw, capacity=max(1024, 2 * len(flat)))
        graph.add(flat.labels(), flat.vectors())
        return graph

    # -- snapshots -------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """Write the whole index to ``directory`` (replaced atomically by a rename)."""
        staging = directory.with_name(directory.name + ".tmp")
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        manifest: list[dict[str, object]] = []
        flat_keys: list[str] = []
        flat_labels: list[Labels] = []
        flat_vectors: list[Vector] = []
        for number, (key, index) in enumerate(self._partitions.items()):
            if isinstance(index, _HnswPartition):
                graph_file = f"graph-{number}.bin"
                index.save(staging / graph_file)
                np.save(staging / f"graph-{number}-labels.npy", index.labels())
                manifest.append({"key": key, "kind": "hnsw", "file": graph_file})
            else:
                flat_keys.append(key)
                flat_labels.append(index.labels())
                flat_vectors.append(index.vectors())
        sizes = np.array([len(labels) for labels in flat_labels], dtype=np.int64)
        np.savez(
            staging / "flat.npz",
            sizes=sizes,
            labels=np.concatenate(flat_labels) if flat_labels else np.zeros(0, np.int64),
            vectors=(
                np.concatenate(flat_vectors)
                if flat_vectors
                else np.zeros((0, self.dim), np.float32)
            ),
        )
        header = {
            "format": SNAPSHOT_FORMAT,
            "dim": self.dim,
            "hnsw_threshold": self.hnsw_threshold,
            "hnsw": {
                "m": self.hnsw.m,
                "ef_construction": self.hnsw.ef_construction,
                "ef_search": self.hnsw.ef_search,
            },
            "graphs": manifest,
            "flat_keys": flat_keys,
        }
        (staging / "index.json").write_text(json.dumps(header))
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)

    @classmethod
    def load(cls, directory: Path) -> PartitionedIndex:
        """Read an index written by :meth:`save`; raises ``ValueError`` if it is unusable."""
        try:
            header = json.loads((directory / "index.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"no readable index snapshot in {directory}: {exc}") from exc
        if header.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"index snapshot format {header.get('format')} is not supported")
        index = cls(
            int(header["dim"]),
            hnsw_threshold=int(header["hnsw_threshold"]),
            hnsw=HnswParams(**header["hnsw"]),
        )
        for graph in header["graphs"]:
            file = directory / str(graph["file"])
            labels = np.load(file.with_name(file.stem + "-labels.npy"))
            partition = _HnswPartition.load(file, index.dim, index.hnsw, labels)
            index._partitions[str(graph["key"])] = partition
            for label in labels.tolist():
                index._partition_of[label] = str(graph["key"])
        with np.load(directory / "flat.npz") as flat:
            sizes, labels, vectors = flat["sizes"], flat["labels"], flat["vectors"]
        start = 0
        for key, size in zip(header["flat_keys"], sizes.tolist(), strict=True):
            part = _FlatPartition(index.dim)
            part.add(labels[start : start + size], vectors[start : start + size])
            index._partitions[str(key)] = part
            for label in labels[start : start + size].tolist():
                index._partition_of[label] = str(key)
            start += size
        return index
