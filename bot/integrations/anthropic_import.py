"""Imports the Anthropic SDK so that the parts the bot does not use are loaded only when used.

Two kinds of eager import make a plain `import anthropic` cost about 3,000 modules and 41 MB
(about 1,100 modules and 19 MB this way):

- `anthropic.types`, `anthropic.types.beta`, the other `types` packages and the `resources`
  packages consist only of `from .module import Name as Name` lines (and perhaps an `__all__`
  list): importing one imports every module it lists, although the bot uses a few dozen. When a
  package's `__init__` is nothing but such relative re-exports, the finder creates the package
  with the same `__path__` and a module `__getattr__` that imports a name's module the first time
  the name is looked up, and keeps it. Anything else in an `__init__` (any other statement, a star
  import, or a name that is also the name of one of its modules) and the package is imported as
  usual.
- `anthropic/__init__` imports the clients for other cloud platforms (Vertex, Bedrock, Foundry),
  and each of them imports the whole beta API. The bot never builds one. The package is executed
  without those import statements, and the names they would bind are imported on first use. If
  any other statement of the `__init__` uses one of those names, or a star import cannot be
  resolved from the target's source, the package is imported as usual.

The names, the objects they refer to and the modules they come from are the same either way;
only when each module is imported changes. Call `import_anthropic()` before anything else imports
anthropic (the entry point does). If anthropic is already imported it does nothing.
"""

from __future__ import annotations

import ast
import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

ROOT_PACKAGE = "anthropic"
LAZY_PACKAGE_PREFIXES = ("anthropic.types", "anthropic.resources")
DEFERRED_MODULES = ("lib.vertex", "lib.bedrock", "lib.foundry")  # relative to the root package

Origins = dict[str, tuple[str, str]]  # name -> (relative module, name in that module)


@dataclass(frozen=True)
class Reexports:
    names: Origins
    declared_all: list[str] | None  # the package's `__all__`, if it has one

    def star_names(self) -> list[str]:
        """What `from package import *` binds."""
        if self.declared_all is not None:
            return self.declared_all
        return [name for name in self.names if not name.startswith("_")]


def import_anthropic() -> bool:
    """Imports anthropic with lazy re-exporting packages; False if it was already imported."""
    if ROOT_PACKAGE in sys.modules:
        return False
    if not any(isinstance(f, LazyAnthropicFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, LazyAnthropicFinder())
    importlib.import_module(ROOT_PACKAGE)
    return True


def reexports_of(source: bytes) -> Reexports | None:
    """The names an `__init__` re-exports, or None if it does anything else."""
    names: Origins = {}
    declared_all: list[str] | None = None
    for node in ast.parse(source).body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        if (listed := _all_of_constants(node)) is not None:
            declared_all = listed
            continue
        if not (isinstance(node, ast.ImportFrom) and node.level == 1 and node.module):
            return None
        for alias in node.names:
            if alias.name == "*":
                return None
            names[alias.asname or alias.name] = (node.module, alias.name)
    if _submodules_of(names) & names.keys():
        return None  # a name that is also a module's name: only the eager order gets it right
    return Reexports(names, declared_all)


def without_deferred_imports(
    source: bytes, package_dir: Path, deferred: Sequence[str]
) -> tuple[ast.Module, Origins] | None:
    """The `__init__` without its imports of `deferred` modules, and the names they would bind.

    None if the `__init__` uses one of those names itself, or a star import's names are unknown.
    """
    tree = ast.parse(source)
    kept: list[ast.stmt] = []
    origins: Origins = {}
    for node in tree.body:
        if not isinstance(node, ast.ImportFrom) or node.level != 1 or node.module not in deferred:
            kept.append(node)
            continue
        module = node.module or ""
        for alias in node.names:
            if alias.name != "*":
                origins[alias.asname or alias.name] = (module, alias.name)
                continue
            star = _star_reexports(package_dir, module)
            if star is None:
                return None
            origins.update((name, (module, name)) for name in star)
    used = {
        n.id for n in ast.walk(ast.Module(body=kept, type_ignores=[])) if isinstance(n, ast.Name)
    }
    declared = {name for node in kept if (listed := _all_of_constants(node)) for name in listed}
    if origins.keys() & (used | declared):
        return None
    tree.body = kept
    return tree, origins


def _star_reexports(package_dir: Path, module: str) -> list[str] | None:
    """The names `from .module import *` binds, if the module is a package that only re-exports."""
    init = package_dir.joinpath(*module.split("."), "__init__.py")
    if not init.is_file():
        return None
    reexports = reexports_of(init.read_bytes())
    if reexports is None or any(not m.startswith("_") for m in _submodules_of(reexports.names)):
        return None  # a public submodule would be bound by the star import too
    return reexports.star_names()


def _submodules_of(names: Origins) -> set[str]:
    return {module.split(".")[0] for module, _ in names.values()}


def _all_of_constants(node: ast.stmt) -> list[str] | None:
    """The names of `__all__ = [...]` when it lists plain strings, else None."""
    if not (
        isinstance(node, ast.Assign)
        and [ast.unparse(target) for target in node.targets] == ["__all__"]
        and isinstance(node.value, (ast.List, ast.Tuple))
    ):
        return None
    values = [e.value for e in node.value.elts if isinstance(e, ast.Constant)]
    if len(values) != len(node.value.elts) or not all(isinstance(v, str) for v in values):
        return None
    return [str(v) for v in values]


class LazyAnthropicFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != ROOT_PACKAGE and not fullname.startswith(LAZY_PACKAGE_PREFIXES):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.submodule_search_locations is None or spec.origin is None:
            return spec
        origin = Path(spec.origin)
        if fullname == ROOT_PACKAGE:
            plan = without_deferred_imports(origin.read_bytes(), origin.parent, DEFERRED_MODULES)
            if plan is not None:
                spec.loader = _DeferringLoader(*plan)
            return spec
        reexports = reexports_of(origin.read_bytes())
        if reexports is not None:
            spec.loader = _LazyReexportLoader(reexports)
        return spec


class _LazyReexportLoader(importlib.abc.Loader):
    def __init__(self, reexports: Reexports) -> None:
        self._reexports = reexports

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # the default module, with the spec's __path__

    def exec_module(self, module: ModuleType) -> None:
        if self._reexports.declared_all is not None:
            module.__dict__["__all__"] = list(self._reexports.declared_all)
        _load_names_on_first_use(module, self._reexports.names, missing=_submodule)


class _DeferringLoader(importlib.abc.Loader):
    def __init__(self, tree: ast.Module, deferred: Origins) -> None:
        self._tree = tree
        self._deferred = deferred

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        # The package's own `__init__`, less the deferred imports: what importing it would run.
        exec(compile(self._tree, module.__file__ or module.__name__, "exec"), module.__dict__)  # noqa: S102
        _load_names_on_first_use(module, self._deferred, missing=_no_such_name)


def _load_names_on_first_use(
    module: ModuleType, origins: Origins, missing: Callable[[str, str], Any]
) -> None:
    package = module.__name__

    def load_on_first_use(name: str) -> Any:
        found = origins.get(name)
        if found is None:
            return missing(package, name)
        value = getattr(importlib.import_module(f"{package}.{found[0]}"), found[1])
        setattr(module, name, value)
        return value

    def names() -> list[str]:
        return sorted(set(module.__dict__) | origins.keys())

    module.__getattr__ = load_on_first_use  # type: ignore[method-assign]
    module.__dir__ = names  # type: ignore[method-assign]


def _submodule(package: str, name: str) -> ModuleType:
    """A module of the package, as an attribute (the eager import would have imported it)."""
    try:
        return importlib.import_module(f"{package}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{package}.{name}":
            raise
        _no_such_name(package, name)


def _no_such_name(package: str, name: str) -> NoReturn:
    raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
