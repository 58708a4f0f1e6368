"""anthropic imported through `import_anthropic()` exposes the same names, loading modules on use.

Each check runs in fresh interpreters: in this one anthropic is already imported (eagerly).
"""

from __future__ import annotations

import json
from pathlib import Path

from bot.integrations.anthropic_import import Reexports, reexports_of, without_deferred_imports
from tests.harness import run_fresh_python

# Every public name of the root package and of every `types` and `resources` package, as
# "module:qualname" of its object.
LIST_NAMES = """
    import importlib, json, sys
    from pathlib import Path
    if sys.argv[1] == "lazy":
        from bot.integrations.anthropic_import import import_anthropic
        assert import_anthropic() is True
    import anthropic
    modules_after_import = len([m for m in sys.modules if m.startswith("anthropic")])
    base = Path(anthropic.__file__).parent
    names = {}
    inits = [base / "__init__.py", *base.glob("types/**/__init__.py"), *base.glob("resources/**/__init__.py")]
    for init in sorted(inits):
        package = importlib.import_module(".".join(init.parent.relative_to(base.parent).parts))
        for name in dir(package):
            value = getattr(package, name)
            if name.startswith("__") or type(value).__name__ in ("module", "_Feature"):
                continue  # submodules appear as attributes only once imported, either way
            where = getattr(value, "__module__", type(value).__name__)
            names[f"{package.__name__}.{name}"] = f"{where}:{getattr(value, '__qualname__', '')}"
    print(json.dumps({"modules_after_import": modules_after_import, "names": names}))
"""


def test_every_reexported_name_is_the_same_object_as_with_a_plain_import() -> None:
    eager = json.loads(run_fresh_python(LIST_NAMES, "eager"))
    lazy = json.loads(run_fresh_python(LIST_NAMES, "lazy"))
    assert len(eager["names"]) > 3000
    assert "anthropic.AsyncAnthropic" in eager["names"]
    assert "anthropic.AnthropicVertex" in eager["names"]  # a deferred name
    assert lazy["names"] == eager["names"]
    # The point of it: far fewer modules imported up front.
    assert lazy["modules_after_import"] < eager["modules_after_import"] - 300


def test_the_client_streams_and_builds_messages_after_a_lazy_import() -> None:
    out = run_fresh_python(
        """
        from bot.integrations.anthropic_import import import_anthropic
        import_anthropic()
        import anthropic
        from anthropic.types import Message, TextBlockParam
        client = anthropic.AsyncAnthropic(api_key="test-key-not-real", base_url="http://127.0.0.1:9")
        assert callable(client.messages.create) and callable(client.files.upload)
        message = Message.construct(
            id="m", type="message", role="assistant", model="claude", stop_reason="end_turn",
            content=[{"type": "text", "text": "hi"}], usage={"input_tokens": 1, "output_tokens": 2},
        )
        print(type(message.content[0]).__name__, message.content[0].text, message.usage.output_tokens)
        import sys
        # The clients for other cloud platforms, and the beta API they import, are not loaded.
        print("anthropic.resources.beta" in sys.modules, "anthropic.lib.vertex" in sys.modules)
        print(anthropic.types.beta.beta_message.BetaMessage.__name__)
        print(anthropic.AsyncAnthropicBedrock.__name__, "anthropic.lib.bedrock" in sys.modules)
        try:
            anthropic.types.no_such_name
        except AttributeError:
            print("AttributeError")
        """
    )
    assert out.split() == [
        *["TextBlock", "hi", "2"],
        *["False", "False"],
        "BetaMessage",
        *["AsyncAnthropicBedrock", "True"],
        "AttributeError",
    ]


def test_a_package_that_does_more_than_reexport_is_imported_as_usual() -> None:
    assert reexports_of(b"from .a import A as A\nfrom .b import (B as B, C)\n") == Reexports(
        {"A": ("a", "A"), "B": ("b", "B"), "C": ("b", "C")}, declared_all=None
    )
    with_all = reexports_of(b"from .a import A, _B\n__all__ = ['A', '_B']\n")
    assert with_all is not None and with_all.star_names() == ["A", "_B"]
    without_all = reexports_of(b"from .a import A, _B\n")
    assert without_all is not None and without_all.star_names() == ["A"]
    assert reexports_of(b"from .a import A\n__all__ = ['A', name]\n") is None
    assert reexports_of(b"from __future__ import annotations\nfrom .a import A\n") is not None
    assert reexports_of(b"from .a import A\nA.model_rebuild()\n") is None
    assert reexports_of(b"from .a import *\n") is None
    assert reexports_of(b"import json\nfrom .a import A\n") is None
    assert reexports_of(b"from ..a import A\n") is None
    # `x` is both a module and a name it exports: after `import pkg.x` only the eager order
    # leaves the name (not the module) as the attribute.
    assert reexports_of(b"from .x import x\n") is None


def test_the_root_package_runs_without_its_deferred_imports_unless_it_uses_their_names(
    tmp_path: Path,
) -> None:
    (tmp_path / "cloud").mkdir()
    (tmp_path / "cloud" / "__init__.py").write_text("from ._client import Cloud, AsyncCloud\n")
    (tmp_path / "public").mkdir()
    (tmp_path / "public" / "__init__.py").write_text("from .client import Public\n")

    def plan(source: str) -> dict[str, tuple[str, str]] | None:
        result = without_deferred_imports(source.encode(), tmp_path, ("cloud", "public", "solo"))
        return None if result is None else result[1]

    root = "from .core import Client\nfrom .cloud import *\nfrom .solo import Solo as Solo\n"
    assert plan(root) == {
        "Cloud": ("cloud", "Cloud"),
        "AsyncCloud": ("cloud", "AsyncCloud"),
        "Solo": ("solo", "Solo"),
    }
    kept = without_deferred_imports(root.encode(), tmp_path, ("cloud", "solo"))
    assert kept is not None and [type(node).__name__ for node in kept[0].body] == ["ImportFrom"]
    # The package uses a deferred name, or lists it in __all__: imported as usual.
    assert plan(root + "Cloud.setup()\n") is None
    assert plan(root + "__all__ = ['Client', 'Solo']\n") is None
    # A star import whose names cannot be known from source: a plain module, or a package with a
    # public submodule (the star import would bind the submodule too).
    assert plan("from .solo import *\n") is None
    assert plan("from .public import *\n") is None
