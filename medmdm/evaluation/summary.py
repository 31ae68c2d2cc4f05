"""Per-case rows to summaries: mean, standard deviation and count per method and metric; CSV files (whole,
or a row at a time) and tables."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from medmdm.evaluation.scores import COST_METRICS, DIRECTION
from medmdm.writers.atomic import atomic_path

Row = Mapping[str, Any]
Summary = dict[str, dict[str, dict[str, float | int | None]]]


def summarise(rows: Iterable[Row], columns: Sequence[str]) -> Summary:
    """Mean, sample standard deviation and count of each column, per method, NaN values left out.

    Parameters
    ----------
    rows : iterable of mapping
        Per-case rows, each with a ``method`` and the ``columns``.
    columns : sequence of str
        The numeric columns to summarise.

    Returns
    -------
    dict
        ``{method: {column: {"mean": float | None, "std": float | None, "n": int}}}``, methods in
        the order they first appear. ``mean`` is None when no value is finite, ``std`` when fewer
        than two are.

    Examples
    --------
    >>> rows = [{"method": "hdm", "dice": 0.5}, {"method": "hdm", "dice": 1.0},
    ...         {"method": "hdm", "dice": float("nan")}]
    >>> summarise(rows, ["dice"])["hdm"]["dice"]
    {'mean': 0.75, 'std': 0.3535533905932738, 'n': 2}
    """
    values: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        per_method = values.setdefault(str(row["method"]), {column: [] for column in columns})
        for column in columns:
            value = float(row[column])
            if math.isfinite(value):
                per_method[column].append(value)
    return {
        method: {column: _statistics(found) for column, found in per_column.items()}
        for method, per_column in values.items()
    }


def _statistics(values: list[float]) -> dict[str, float | int | None]:
    n = len(values)
    if n == 0:
        return {"mean": None, "std": None, "n": 0}
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"mean": mean, "std": std, "n": n}


def format_value(column: str, value: float | None) -> str:
    """A number as the tables show it: samples as integers, seconds to 2 significant digits."""
    if value is None:
        return "-"
    if column == "samples":
        return f"{value:.0f}"
    if column == "seconds":
        return f"{value:.2g}" if value < 10 else f"{value:.0f}"
    return f"{value:.3f}" if column == "deletion_auc" else f"{value:.2f}"


def format_table(summary: Summary, columns: Sequence[str], *, spread: bool = True) -> str:
    """A Markdown table, one row per method: ``mean ± std`` of each column (``spread=False``: the mean).

    The header marks each column with ↑ (higher is better) or ↓ (lower is better); cost columns
    are headed ``seconds / case`` and ``samples / case``.
    """
    header = ["method"] + [_heading(column) for column in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, per_column in summary.items():
        cells = [method]
        for column in columns:
            stats = per_column[column]
            cell = format_value(column, stats["mean"])
            if spread and stats["std"] is not None:
                cell += f" ± {format_value(column, stats['std'])}"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _heading(column: str) -> str:
    if column in COST_METRICS:
        return f"{column} / case"
    return f"{column} {'↑' if DIRECTION.get(column, 'higher') == 'higher' else '↓'}"


def write_rows(rows: Sequence[Row], path: str | Path, columns: Sequence[str]) -> Path:
    """Write rows as CSV with the given columns, atomically; NaN is written as an empty cell.

    Floats are written with 6 significant digits.
    """
    path = Path(path)
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(column, "")) for column in columns])
    return path


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.6g}"
    return value


class RowLog:
    """A CSV file that gets each row as it is scored, flushed at once, so a stopped run keeps its finished
    rows.

    Parameters
    ----------
    path : str or Path
        The CSV file (replaced).
    columns : sequence of str
        Its columns; a row's missing columns are empty cells.
    """

    def __init__(self, path: str | Path, columns: Sequence[str]) -> None:
        self.path = Path(path)
        self.columns = list(columns)
        self._handle = self.path.open("w", newline="")
        self._writer = csv.writer(self._handle)
        self._writer.writerow(self.columns)
        self._handle.flush()

    def write(self, row: Row) -> None:
        """Append one row."""
        self._writer.writerow([_cell(row.get(column, "")) for column in self.columns])
        self._handle.flush()

    def close(self) -> None:
        """Close the file."""
        self._handle.close()

    def __enter__(self) -> RowLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
