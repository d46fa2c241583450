from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nearline.gateway.cache.ann_index import PartitionedIndex

DIM = 16


def unit_rows(count: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(count, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.mark.parametrize("hnsw_threshold", [10_000, 8], ids=["flat", "hnsw"])
def test_finds_the_stored_vector_first(hnsw_threshold: int) -> None:
    index = PartitionedIndex(DIM, hnsw_threshold=hnsw_threshold)
    rows = unit_rows(200)
    index.add("p", range(200), rows)

    for label in (0, 57, 199):
        best = index.search("p", rows[label], k=3)
        assert best[0].label == label
        assert best[0].similarity == pytest.approx(1.0, abs=1e-5)
        assert [n.similarity for n in best] == sorted((n.similarity for n in best), reverse=True)


@pytest.mark.parametrize("hnsw_threshold", [10_000, 8], ids=["flat", "hnsw"])
def test_search_never_crosses_partitions(hnsw_threshold: int) -> None:
    index = PartitionedIndex(DIM, hnsw_threshold=hnsw_threshold)
    rows = unit_rows(40)
    index.add("tenant-a", range(20), rows[:20])
    index.add("tenant-b", range(20, 40), rows[20:])

    found = index.search("tenant-b", rows[3], k=10)

    assert found
    assert all(20 <= n.label < 40 for n in found)
    assert index.search("tenant-c", rows[3]) == []


@pytest.mark.parametrize("hnsw_threshold", [10_000, 8], ids=["flat", "hnsw"])
def test_removed_entries_are_not_found_and_labels_can_return(hnsw_threshold: int) -> None:
    index = PartitionedIndex(DIM, hnsw_threshold=hnsw_threshold)
    rows = unit_rows(30)
    index.add("p", range(30), rows)

    assert index.remove(5)
    assert not index.remove(5)
    assert all(n.label != 5 for n in index.search("p", rows[5], k=10))
    assert len(index) == 29

    index.add("p", [5], rows[5:6])
    assert index.search("p", rows[5], k=1)[0].label == 5


def test_a_partition_moves_to_hnsw_when_it_grows_and_keeps_its_entries() -> None:
    index = PartitionedIndex(DIM, hnsw_threshold=16)
    rows = unit_rows(100)
    for label in range(100):
        index.add("p", [label], rows[label : label + 1])

    assert len(index) == 100
    assert {index.search("p", rows[i], k=1)[0].label for i in range(100)} == set(range(100))


def test_a_partition_emptied_by_removals_disappears() -> None:
    index = PartitionedIndex(DIM)
    index.add("p", [1, 2], unit_rows(2))
    index.remove(1)
    index.remove(2)

    assert index.partition_sizes() == {}


def test_remove_partitions_returns_their_labels() -> None:
    index = PartitionedIndex(DIM, hnsw_threshold=8)
    rows = unit_rows(30)
    index.add("a", range(20), rows[:20])
    index.add("b", range(20, 30), rows[20:])

    assert sorted(index.remove_partitions(["a", "missing"])) == list(range(20))
    assert len(index) == 10
    assert 3 not in index


def test_snapshot_round_trip_keeps_every_partition_and_removal(tmp_path: Path) -> None:
    index = PartitionedIndex(DIM, hnsw_threshold=32)
    rows = unit_rows(150)
    index.add("big", range(100), rows[:100])  # HNSW
    index.add("small", range(100, 120), rows[100:120])  # flat: 20 rows
    index.remove(7)
    index.remove(101)

    index.save(tmp_path / "snap")
    loaded = PartitionedIndex.load(tmp_path / "snap")

    assert loaded.partition_sizes() == index.partition_sizes()
    for label in (0, 50, 99, 100, 119):
        partition = index.partition_of(label)
        assert partition is not None
        assert loaded.search(partition, rows[label], k=1)[0].label == label
    assert all(n.label != 7 for n in loaded.search("big", rows[7], k=5))
    loaded.add("big", [500], unit_rows(1, seed=9))  # a loaded graph still accepts entries
    assert loaded.search("big", unit_rows(1, seed=9)[0], k=1)[0].label == 500


def test_loading_a_damaged_snapshot_raises_value_error(tmp_path: Path) -> None:
    (tmp_path / "snap").mkdir()
    (tmp_path / "snap" / "index.json").write_text("{not json")

    with pytest.raises(ValueError, match="snapshot"):
        PartitionedIndex.load(tmp_path / "snap")
