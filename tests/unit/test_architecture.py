"""The structure the design asks for (design section 13), read from the source: imports point
down the layers, and only the ledger writes api_calls rows and holds, for the metered path and
Stars refunds."""

from __future__ import annotations

import ast
import re
from pathlib import Path

BOT = Path(__file__).resolve().parents[2] / "bot"
# Highest first: a module may import its own layer and those after it, never those before it.
LAYERS = ("telegram", "turns", "agent", "services", "providers", "db")
# The composition root and operations wire the layers together; no layer imports them.
ROOT = ("app", "builders", "wiring", "runtime", "cli", "__main__", "ops")

# Where api_calls rows and holds are written: the ledger's statements and row operations.
WRITERS = {"services/ledger/statements.py", "services/ledger/rows.py"}
WRITES = re.compile(
    r"INSERT\s+INTO\s+(api_calls|balance_holds)\b|insert\(\s*(ApiCall|BalanceHold)\b"
    r"|(?<!class )\b(ApiCall|BalanceHold)\(",
    re.IGNORECASE,
)
# Who calls the ledger's hold and settle: the metered path, and refunds inside their transaction.
CALLERS = {
    r"(ledger|billing)\.(hold|settle)\(": {"services/metered.py"},
    r"\bhold_within\(|\bcapture_whole\(|\bdebit_available\(": {"services/stars_refunds.py"},
}


def modules() -> list[Path]:
    return sorted(BOT.rglob("*.py"))


def relative(path: Path) -> str:
    return path.relative_to(BOT).as_posix()


def imported(path: Path) -> set[str]:
    """Every bot module `path` imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {name for name in names if name == "bot" or name.startswith("bot.")}


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None
    if parts[1] in ROOT:
        return -1
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else None


def upward_imports(path: Path) -> list[str]:
    own = layer_of("bot." + relative(path).removesuffix(".py").replace("/", "."))
    if own is None or own < 0:
        return []
    return sorted(
        f"{relative(path)} imports {name}"
        for name in imported(path)
        if (target := layer_of(name)) is not None and target < own
    )


def test_no_import_runs_up_the_layers() -> None:
    found = [line for path in modules() for line in upward_imports(path)]
    assert found == []


def test_the_layer_check_sees_an_upward_import(tmp_path: Path) -> None:
    assert layer_of("bot.telegram.poller") == 0 and layer_of("bot.db.models") == 5
    assert layer_of("bot.wiring") == -1 and layer_of("bot.config") is None
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from bot.telegram.ui import X\n    import bot.agent.loop\n")
    assert imported(sample) == {"bot.telegram.ui", "bot.agent.loop"}


def test_only_the_ledger_writes_api_calls_rows_and_holds() -> None:
    writers = {relative(path) for path in modules() if WRITES.search(path.read_text())}
    assert writers == WRITERS


def test_only_the_metered_path_and_refunds_hold_and_settle() -> None:
    for pattern, allowed in CALLERS.items():
        callers = {
            relative(path)
            for path in modules()
            if not relative(path).startswith("services/ledger/")
            and re.search(pattern, path.read_text())
        }
        assert callers == allowed, pattern


def test_the_write_check_sees_a_hold_or_a_call_row() -> None:
    assert WRITES.search("INSERT INTO balance_holds (user_id) VALUES (1)")
    assert WRITES.search("insert into api_calls (user_id)")
    assert WRITES.search("session.execute(insert(ApiCall).values(x=1))")
    assert WRITES.search("BalanceHold(user_id=1, amount_micros=5)")
    assert not WRITES.search("SELECT * FROM api_calls")
    assert not WRITES.search("class ApiCall(Base):")
