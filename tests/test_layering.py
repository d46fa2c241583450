"""The layering, read from the source: every import points down (docs/architecture.md).

core ← config, embed ← gateway, worker ← insights, training ← testing ← app ← cli.
A package may import itself and anything in a lower layer, never a peer or a higher one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS: dict[str, int] = {
    "nearline": 0,  # the package's own __init__ (the version) only
    "nearline.core": 0,
    "nearline.config": 1,
    "nearline.embed": 1,
    "nearline.gateway": 2,
    "nearline.worker": 2,
    "nearline.insights": 3,
    "nearline.training": 3,
    "nearline.testing": 4,
    "nearline.app": 5,
    "nearline.cli": 6,
    "nearline.__main__": 7,
}


def part_of(module: str) -> str:
    """The layered part a module belongs to: its longest prefix in ``LAYERS``."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in LAYERS and (n > 1 or len(parts) == 1):
            return prefix
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS and the docs")


def module_name(path: Path) -> str:
    parts = list(path.with_suffix("").relative_to(SRC).parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            target = node.module
            if node.module == "nearline":  # from nearline import x: the module x if it is one
                target = next((n for n in names[1:] if part_of_or_none(n)), "nearline")
            found.append((node.lineno, target))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return [(line, name) for line, name in found if name.split(".")[0] == "nearline"]


def part_of_or_none(module: str) -> str | None:
    try:
        return part_of(module)
    except AssertionError:
        return None


def violations(sources: list[Path]) -> list[str]:
    found = []
    for path in sources:
        here = part_of(module_name(path))
        for line, target in imports_of(path):
            there = part_of(target)
            if there != here and LAYERS[there] >= LAYERS[here]:
                found.append(f"{path.relative_to(SRC)}:{line} ({here}) imports {target} ({there})")
    return found


def test_every_import_points_down_the_layers() -> None:
    sources = sorted(SRC.rglob("*.py"))
    assert len(sources) > 100
    assert violations(sources) == []


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    bad = SRC / "nearline" / "core" / "_layering_probe.py"
    bad.write_text("from nearline.gateway.serving.pipeline import ServingPipeline\n")
    try:
        assert violations([bad]) == [
            "nearline/core/_layering_probe.py:1 (nearline.core) imports "
            "nearline.gateway.serving.pipeline (nearline.gateway)"
        ]
    finally:
        bad.unlink()


@pytest.mark.parametrize(
    ("module", "part"),
    [("nearline.gateway.cache.exact", "nearline.gateway"), ("nearline.core", "nearline.core")],
)
def test_parts(module: str, part: str) -> None:
    assert part_of(module) == part


def test_no_module_is_over_500_lines() -> None:
    long = {
        str(path.relative_to(SRC)): n
        for path in SRC.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > 500
    }
    assert long == {}
