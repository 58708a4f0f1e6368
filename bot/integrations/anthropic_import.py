"""Imports the Anthropic SDK so that its re-exporting packages load their modules on first use.

`anthropic.types`, `anthropic.types.beta` and the other `types` and `resources` packages consist
only of `from .module import Name as Name` lines: importing one imports every module it lists
(about 2,600 type modules in all), although the bot uses a few dozen. `import_anthropic()`
installs an import finder for those packages. When a package's `__init__` is nothing but such
relative re-exports, the package is created with the same `__path__` and a module `__getattr__`
that imports a name's module the first time the name is looked up, and keeps it. Anything else in
an `__init__` (any other statement, a star import, or a name that is also the name of one of its
modules) and the package is imported as usual. The names, the objects they refer to and the
modules they come from are the same either way; only when each module is imported changes.

Call it before anything else imports anthropic (the entry point does). If anthropic is already
imported it does nothing.
"""

from __future__ import annotations

import ast
import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

LAZY_PACKAGE_PREFIXES = ("anthropic.types", "anthropic.resources")

Reexports = dict[str, tuple[str, str]]  # exported name -> (relative module, name in it)


def import_anthropic() -> bool:
    """Imports anthropic with lazy re-exporting packages; False if it was already imported."""
    if "anthropic" in sys.modules:
        return False
    if not any(isinstance(f, LazyReexportFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, LazyReexportFinder(LAZY_PACKAGE_PREFIXES))
    importlib.import_module("anthropic")
    return True


def reexports_of(source: bytes) -> Reexports | None:
    """The names an `__init__` re-exports, or None if it does anything else."""
    table: Reexports = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        if not (isinstance(node, ast.ImportFrom) and node.level == 1 and node.module):
            return None
        for alias in node.names:
            if alias.name == "*":
                return None
            table[alias.asname or alias.name] = (node.module, alias.name)
    submodules = {module.split(".")[0] for module, _ in table.values()}
    if submodules & table.keys():
        return None  # a name that is also a module's name: only the eager order gets it right
    return table


class LazyReexportFinder(importlib.abc.MetaPathFinder):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        self._prefixes = prefixes

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(self._prefixes):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.submodule_search_locations is None or spec.origin is None:
            return spec
        table = reexports_of(Path(spec.origin).read_bytes())
        if table is not None:
            spec.loader = _LazyReexportLoader(table)
        return spec


class _LazyReexportLoader(importlib.abc.Loader):
    def __init__(self, table: Reexports) -> None:
        self._table = table

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # the default module, with the spec's __path__

    def exec_module(self, module: ModuleType) -> None:
        table = self._table
        package = module.__name__

        def load_on_first_use(name: str) -> Any:
            found = table.get(name)
            if found is None:
                return _submodule(package, name)
            value = getattr(importlib.import_module(f"{package}.{found[0]}"), found[1])
            setattr(module, name, value)
            return value

        def names() -> list[str]:
            return sorted(set(module.__dict__) | table.keys())

        module.__getattr__ = load_on_first_use  # type: ignore[method-assign]
        module.__dir__ = names  # type: ignore[method-assign]


def _submodule(package: str, name: str) -> ModuleType:
    """A module of the package, as an attribute (the eager import would have imported it)."""
    try:
        return importlib.import_module(f"{package}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{package}.{name}":
            raise
        raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
