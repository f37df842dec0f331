"""How numbers appear in the report's text and tables: one place, so every section agrees.

>>> pct(0.6233), num(1 / 3), count(1512.0), count(2.5), pct(None)
('62.3%', '0.333', '1,512', '2.5', '—')
"""

from __future__ import annotations

__all__ = ["count", "num", "pct"]


def pct(x: float | None, digits: int = 1) -> str:
    """A share as a percentage; — when there is none."""
    return "—" if x is None else f"{100 * x:.{digits}f}%"


def num(x: float | None, digits: int = 3) -> str:
    """A number to `digits` decimals; — when there is none."""
    return "—" if x is None else f"{x:.{digits}f}"


def count(x: float | None) -> str:
    """Counts averaged over seeds may be fractional; show decimals only then."""
    if x is None:
        return "—"
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.1f}"
