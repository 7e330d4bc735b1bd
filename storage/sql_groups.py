"""GROUP BY and aggregates of the SQL subset (storage.sql), computed with pyarrow.

Each scanned batch is reduced to partial aggregates per group (pyarrow's hash aggregation)
as it arrives, and the partials are folded together every so often, so memory holds the
groups (not the rows) however many rows match. COUNT, SUM, MIN and MAX fold with
themselves (a count folds by summing); AVG is kept as a sum and a count and divided last.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

FUNCTIONS = ("count", "sum", "min", "max", "avg")
FOLD_ROWS = 65_536  # partial rows held before they are folded into one row per group
# how a partial of each pyarrow function folds into a total
FOLD = {"count_all": "sum", "count": "sum", "sum": "sum", "min": "min", "max": "max"}


@dataclass(frozen=True)
class Aggregate:
    """One aggregate of the select list or ORDER BY: ``COUNT(*)``, ``AVG(t_end)``, ..."""

    function: str  # one of FUNCTIONS
    column: str | None  # None: COUNT(*)
    name: str  # the result column's name: its alias, else e.g. "count(*)", "avg(t_end)"

    def partials(self) -> list[tuple[str | None, str]]:
        """The (column, pyarrow function) partials it is computed from."""
        if self.column is None:
            return [(None, "count_all")]
        if self.function == "avg":
            return [(self.column, "sum"), (self.column, "count")]
        return [(self.column, self.function)]


def partial_name(column: str | None, function: str) -> str:
    """The name pyarrow gives the column of a partial (``count_all`` for COUNT(*))."""
    return function if column is None else f"{column}_{function}"


def aggregate_batches(
    batches: Iterable[pa.Table], keys: list[str], aggregates: list[Aggregate], schema: pa.Schema
) -> pa.Table:
    """The groups of ``keys`` over every batch (tables of ``schema``), with one column per
    aggregate (named by it). Without keys: one row, as SQL gives (COUNT 0 over no rows)."""
    specs = list(dict.fromkeys(p for agg in aggregates for p in agg.partials()))
    held: list[pa.Table] = [_partial(schema.empty_table(), keys, specs)]
    rows = 0
    for batch in batches:
        held.append(_partial(batch, keys, specs))
        rows += held[-1].num_rows
        if rows > FOLD_ROWS:
            held, rows = [_fold(held, keys, specs)], 0
    totals = _fold(held, keys, specs)
    columns = {key: totals[key] for key in keys}
    for agg in aggregates:
        columns[agg.name] = _final(totals, agg)
    return pa.table(columns)


def _partial(table: pa.Table, keys: list[str], specs: list[tuple[str | None, str]]) -> pa.Table:
    aggregations = [([] if column is None else column, fn) for column, fn in specs]
    return table.group_by(keys, use_threads=False).aggregate(aggregations)


def _fold(held: list[pa.Table], keys: list[str], specs: list[tuple[str | None, str]]) -> pa.Table:
    """Partials of the same groups folded into one row per group (names kept)."""
    names = [partial_name(column, fn) for column, fn in specs]
    merged = pa.concat_tables(held)
    folded = merged.group_by(keys, use_threads=False).aggregate(
        [(name, FOLD[fn]) for name, (_, fn) in zip(names, specs, strict=True)]
    )
    columns = {key: folded[key] for key in keys}
    for name, (_, fn) in zip(names, specs, strict=True):
        columns[name] = folded[f"{name}_{FOLD[fn]}"]  # pyarrow's name, back to the partial's
    return pa.table(columns)


def _final(totals: pa.Table, agg: Aggregate) -> pa.ChunkedArray:
    if agg.function != "avg":
        ((column, fn),) = agg.partials()
        values = totals[partial_name(column, fn)]
        return pc.fill_null(values, 0) if fn.startswith("count") else values
    total = pc.cast(totals[partial_name(agg.column, "sum")], pa.float64())
    count = totals[partial_name(agg.column, "count")]
    mean = pc.divide(total, pc.cast(count, pa.float64()))
    return pc.if_else(pc.equal(count, 0), pa.scalar(None, pa.float64()), mean)
