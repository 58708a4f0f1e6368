"""Imports aiogram so that its Telegram models are built on first use, not all at import.

`aiogram.types` ends by building the pydantic schema of every Telegram type it defines (about
600). That costs about 110 MB of memory and over a second of CPU at start-up, although the bot
validates only a few dozen of them. `import_aiogram()` imports aiogram while recording, on each
type, the namespace aiogram would have built it with; pydantic then builds a model the first time
it is validated or constructed, resolving the names it refers to in that same namespace. Method
models and the generic `Response` get the namespace too, so whatever aiogram builds later resolves
every Telegram type.

Call it before anything else imports aiogram (the entry point does). If aiogram is already
imported it does nothing: its models are then already built, which works the same, only heavier.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel


def import_aiogram() -> bool:
    """Imports aiogram with deferred model builds; False if it was already imported."""
    if "aiogram" in sys.modules:
        return False
    namespaces: list[dict[str, Any]] = []
    with _rebuilds_recorded(namespaces):
        importlib.import_module("aiogram")
    if not namespaces:
        # aiogram no longer rebuilds its types at import: nothing was deferred.
        return True
    _share_namespace_with_methods(namespaces[-1])
    return True


@contextmanager
def _rebuilds_recorded(namespaces: list[dict[str, Any]]) -> Iterator[None]:
    """While active, `model_rebuild(_types_namespace=...)` stores the namespace and defers."""
    original = BaseModel.__dict__["model_rebuild"]

    def deferred_rebuild(
        cls: type[BaseModel],
        *,
        force: bool = False,
        raise_errors: bool = True,
        _parent_namespace_depth: int = 2,
        _types_namespace: dict[str, Any] | None = None,
    ) -> bool | None:
        if _types_namespace is not None and not force and not cls.__pydantic_complete__:
            # One shared dict for all types (aiogram's own), not a copy per type.
            cls.__pydantic_parent_namespace__ = _types_namespace
            if not namespaces or namespaces[-1] is not _types_namespace:
                namespaces.append(_types_namespace)
            return None
        rebuilt: bool | None = original.__func__(
            cls,
            force=force,
            raise_errors=raise_errors,
            _parent_namespace_depth=_parent_namespace_depth,
            _types_namespace=_types_namespace,
        )
        return rebuilt

    BaseModel.model_rebuild = classmethod(deferred_rebuild)  # type: ignore[assignment,method-assign]
    try:
        yield
    finally:
        BaseModel.model_rebuild = original  # type: ignore[method-assign]


def _share_namespace_with_methods(namespace: dict[str, Any]) -> None:
    """Method models (and `Response[...]`, which inherits it) resolve types in the same namespace."""
    from aiogram import methods
    from aiogram.methods.base import Response

    for name in methods.__all__:
        model = getattr(methods, name)
        if isinstance(model, type) and issubclass(model, BaseModel):
            model.__pydantic_parent_namespace__ = namespace
    Response.__pydantic_parent_namespace__ = namespace
