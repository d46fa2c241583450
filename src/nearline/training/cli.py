"""``nearline train-router``: train the learned router offline and print its evaluation.

It writes ``learned-router.json`` in the current directory unless ``--output`` says where;
point ``routing.learned.path`` at the file to use it. The router shipped inside the
package is replaced only with ``--replace-packaged`` (a release step, not a user's)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from nearline.core.errors import CommandError
from nearline.gateway.routing.learned import DEFAULT_ROUTER_PATH, RouterFile
from nearline.training.dataset import RoutingDataError
from nearline.training.embedding_cache import DEFAULT_CACHE_DIR

DEFAULT_OUTPUT = "learned-router.json"


def add_commands(commands: Any) -> None:
    parser = commands.add_parser(
        "train-router",
        help="train the learned router offline on RouteLLM's MMLU/GSM8K evaluations",
        description=__doc__,
    )
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="folder of RouteLLM's released MMLU/GSM8K evaluations (a download of your own)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"router file to write (default ./{DEFAULT_OUTPUT}; with --check: the file to "
        "compare with, default the packaged router)",
    )
    parser.add_argument(
        "--replace-packaged",
        action="store_true",
        help="allow --output to be the router shipped in the package",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE_DIR,
        help=f"where prompt embeddings are cached (default {DEFAULT_CACHE_DIR})",
    )
    parser.add_argument("--threads", type=int, default=2, help="embedding threads")
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write: exit 1 unless the result equals --output",
    )
    parser.set_defaults(run=run)


def output_of(args: argparse.Namespace) -> Path:
    """Where the router goes (or, with --check, what it is compared with); refuses the
    packaged router unless --replace-packaged says so. Checked before any training."""
    if args.check:
        return DEFAULT_ROUTER_PATH if args.output is None else Path(args.output)
    output = Path(DEFAULT_OUTPUT) if args.output is None else Path(args.output)
    if output.resolve() == DEFAULT_ROUTER_PATH.resolve() and not args.replace_packaged:
        raise CommandError(
            f"{output} is the router shipped in the package: write elsewhere (--output) or "
            "pass --replace-packaged"
        )
    return output


def run(args: argparse.Namespace) -> int:
    output = output_of(args)
    from nearline.embed import EmbedderLoadError, load_embedder
    from nearline.training.offline import build_router, render_report

    try:
        embedder = load_embedder(num_threads=args.threads)
        trained = build_router(args.data, embedder, args.cache_dir)
    except (RoutingDataError, EmbedderLoadError) as exc:
        raise CommandError(str(exc)) from exc
    print(render_report(trained.report), end="")
    text = trained.spec.to_json()
    if args.check:
        return _compare(text, output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    print(f"nearline train-router: wrote {output}", file=sys.stderr)
    return 0


def _compare(text: str, path: Path) -> int:
    try:
        existing = path.read_text(encoding="utf-8")
    except OSError as exc:
        print(f"nearline train-router: {exc}", file=sys.stderr)
        return 1
    if existing == text:
        print(f"nearline train-router: {path} reproduced byte for byte", file=sys.stderr)
        return 0
    old, new = RouterFile.from_json(existing), RouterFile.from_json(text)
    pairs = [
        *zip(old.strong_weights, new.strong_weights, strict=False),
        *zip(old.weak_weights, new.weak_weights, strict=False),
    ]
    drift = max(abs(a - b) for a, b in pairs)
    print(
        f"nearline train-router: {path} differs (largest weight change {drift:.3g})",
        file=sys.stderr,
    )
    return 1
