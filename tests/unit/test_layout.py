"""The package stays readable: no module of the product grows past about 500 lines."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 500


def test_no_product_module_is_over_500_lines() -> None:
    too_long = {
        str(path.relative_to(ROOT)): lines
        for path in (ROOT / "watcher").rglob("*.py")
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert too_long == {}, "split these modules (docs/architecture.md: one module, one job)"
