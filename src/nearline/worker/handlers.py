"""Finding handlers and filters by name: decorator, entry point or ``module:attr``.

Resolution order for a reference such as ``"score"``:

1. a name registered with ``@handler("score")`` in an imported module;
2. an entry point ``score`` in the ``nearline.handlers`` group of an installed package;
3. ``"package.module:attribute"``, imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, TypeVar

ENTRY_POINT_GROUP = "nearline.handlers"

F = TypeVar("F", bound=Callable[..., Any])


class HandlerNotFound(LookupError):
    """No handler or filter answers to a reference; the message says what was tried."""


class HandlerRegistry:
    def __init__(self) -> None:
        self._named: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator: ``@registry.register("score")`` makes ``score`` usable in config."""

        def remember(function: F) -> F:
            if name in self._named and self._named[name] is not function:
                raise ValueError(f"a handler named {name!r} is already registered")
            self._named[name] = function
            return function

        return remember

    def resolve(self, reference: str) -> Callable[..., Any]:
        if reference in self._named:
            return self._named[reference]
        for point in entry_points(group=ENTRY_POINT_GROUP, name=reference):
            return _callable(reference, point.load())
        module_name, _, attribute = reference.partition(":")
        if not attribute:
            raise HandlerNotFound(
                f"handler {reference!r}: not registered, no {ENTRY_POINT_GROUP!r} entry point, "
                "and not of the form 'package.module:function'"
            )
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise HandlerNotFound(
                f"handler {reference!r}: cannot import {module_name}: {exc}"
            ) from exc
        try:
            return _callable(reference, getattr(module, attribute))
        except AttributeError as exc:
            raise HandlerNotFound(
                f"handler {reference!r}: {module_name} has no {attribute!r}"
            ) from exc


def _callable(reference: str, found: object) -> Callable[..., Any]:
    if not callable(found):
        raise HandlerNotFound(f"handler {reference!r} is not callable")
    return found


default_registry = HandlerRegistry()
handler = default_registry.register
