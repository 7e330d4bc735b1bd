"""The SQL-like search API: one SELECT over ``memories`` or ``videos`` -> a LanceDB query.

    SELECT video_id, t_start, t_end, score FROM memories
    WHERE archive = 'news' AND t_start > 600
    ORDER BY relevance('who speaks at the podium?') LIMIT 10

The text is parsed by sqlglot (a real parser), checked against the table's columns and a
small whitelist of functions, and the WHERE clause is regenerated from the checked AST, so
nothing the user typed reaches Lance unparsed. ``relevance('...')`` picks the ``limit``
(+ ``offset``) clips nearest to the question (vector search, WHERE as pre-filter); in ORDER
BY it sorts as ``score DESC`` and may be combined with other columns, which then re-order
those rows. ``GROUP BY`` and ``COUNT(*)``, ``COUNT/SUM/MIN/MAX/AVG(column)`` are computed
with pyarrow over the filtered scan of only the columns they need (storage.sql_groups).
``LIMIT n OFFSET m`` pages through a result (ordered scans keep only ``m + n`` rows).
A WHERE clause is bounded (MAX_WHERE_TERMS conditions, MAX_WHERE_VALUES literals) so that a
huge one is a clear error, not a crash deep in a parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from schemas.tables import MEMORIES, SQL_COLUMNS, VIDEOS, VIDEOS_SCHEMA, memories_schema
from storage.catalog import rows_of_videos
from storage.sql_groups import FUNCTIONS as AGGREGATES
from storage.sql_groups import Aggregate, aggregate_batches

DEFAULT_LIMIT = 10
MAX_LIMIT = 10_000  # rows of one statement (one page): LIMIT ... OFFSET pages further
MAX_OFFSET = 1_000_000  # an ordered scan holds OFFSET + LIMIT rows while it reads
MAX_WHERE_TERMS = 1_000  # conditions joined by AND/OR in one WHERE (a list: use IN (...))
MAX_WHERE_VALUES = 10_000  # literal values in one WHERE, IN lists included
SORT_EVERY_ROWS = 8_192  # an ordered scan cuts its running top rows at most this often
SCORE = "score"
RELEVANCE = "relevance"
# Columns pyarrow cannot sort (lists).
UNSORTABLE = {f.name for f in VIDEOS_SCHEMA if pa.types.is_list(f.type)} | {"tags"}
ALLOWED_CLAUSES = {"expressions", "from_", "from", "where", "group", "order", "limit", "offset"}
CLAUSE_NAMES = {
    "having": "HAVING",
    "with_": "WITH (common table expressions)",
    "with": "WITH (common table expressions)",
    "distinct": "DISTINCT",
    "qualify": "QUALIFY",
    "windows": "WINDOW",
    "into": "SELECT INTO",
}
# Nodes a WHERE clause may contain besides columns, casts and whitelisted functions.
WHERE_NODES = (
    exp.And, exp.Or, exp.Not, exp.Paren, exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE,
    exp.In, exp.Between, exp.Like, exp.ILike, exp.Is, exp.Null, exp.Boolean, exp.Literal,
    exp.Neg, exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod,
)  # fmt: skip
FUNCTIONS: dict[type[exp.Expression], str] = {
    exp.Lower: "lower",
    exp.Upper: "upper",
    exp.ArrayContains: "array_has / array_contains",
    exp.ArraySize: "array_length",
}
FUNCTION_NAMES = ", ".join(FUNCTIONS.values())
ANSI_ESCAPES = re.compile(r"\x1b\[[0-9;]*m")  # sqlglot underlines the error position
LITERAL_TYPES = {exp.DataType.Type.DATE: "DATE", exp.DataType.Type.TIMESTAMP: "TIMESTAMP"}
AGGREGATE_NODES: dict[type, str] = {
    exp.Count: "count",
    exp.Sum: "sum",
    exp.Min: "min",
    exp.Max: "max",
    exp.Avg: "avg",
}
AGGREGATE_NAMES = "COUNT(*), " + ", ".join(f"{f.upper()}(column)" for f in AGGREGATES)
# each SQL column's Arrow type: SUM and AVG take numbers only
COLUMN_TYPES = {
    MEMORIES: {f.name: f.type for f in memories_schema(1, 1, 1)},
    VIDEOS: {f.name: f.type for f in VIDEOS_SCHEMA},
}


class SqlError(ValueError):
    """A query that is not in the supported subset; the message names the problem."""


@dataclass(frozen=True)
class CompiledQuery:
    """A checked query: what to read, the Lance filter, and how to order and cut."""

    table: str
    columns: list[str]
    where: str | None = None  # Lance filter SQL regenerated from the checked AST
    relevance: str | None = None  # the question text of relevance('...')
    order_by: list[tuple[str, bool]] = field(default_factory=list)  # (column, descending)
    limit: int = DEFAULT_LIMIT
    offset: int = 0  # rows skipped before the first returned (after ORDER BY)
    group_by: list[str] = field(default_factory=list)  # GROUP BY columns
    aggregates: list[Aggregate] = field(default_factory=list)  # select list and ORDER BY's

    @property
    def grouped(self) -> bool:
        """One row per group (or one row in all) rather than one per stored row."""
        return bool(self.group_by or self.aggregates)


def compile_sql(text: str) -> CompiledQuery:
    """Parse and check one SELECT statement; raise SqlError naming what is not allowed."""
    stmt = _parse_select(text)
    table, alias = _from_table(stmt)
    scope = _Scope(table, alias)
    where_node = stmt.args.get("where")
    where = _where(where_node.this, scope) if where_node else None
    limit, offset = _limit(stmt.args.get("limit")), _offset(stmt.args.get("offset"))
    if _is_grouped(stmt):
        return _compile_grouped(stmt, scope, where, limit, offset)
    relevance, order_by = _order_by(stmt.args.get("order"), scope)
    columns = _select_list(stmt.expressions, scope, relevance is not None)
    if relevance is not None and offset + limit > MAX_LIMIT:
        raise SqlError(
            f"with relevance() OFFSET + LIMIT is at most {MAX_LIMIT} (the clips searched), "
            f"got {offset} + {limit}"
        )
    return CompiledQuery(table, columns, where, relevance, order_by, limit, offset)


def compile_where(predicate: str, table: str = MEMORIES) -> str:
    """Check a bare predicate (the --where flag) and return it as a Lance filter."""
    if not predicate or not predicate.strip():
        raise SqlError("empty WHERE predicate")
    if table not in SQL_COLUMNS:
        raise SqlError(f"unknown table {table!r}: use one of {', '.join(SQL_COLUMNS)}")
    stmt = _parse_select(f"SELECT * FROM {table} WHERE {predicate}")
    extra = [k for k, v in stmt.args.items() if v and k not in {"expressions", "from_", "where"}]
    if extra:
        raise SqlError(f"a WHERE predicate must be a condition only, found {extra[0].upper()}")
    return _where(stmt.args["where"].this, _Scope(table, ""))


@dataclass(frozen=True)
class _Scope:
    table: str
    alias: str

    def check_qualifier(self, node: exp.Column) -> None:
        if node.table and node.table not in (self.table, self.alias):
            raise SqlError(f"unknown table {node.table!r} in column {node.sql()}")

    def column(self, node: exp.Column, allow_score: bool = False) -> str:
        """The checked, unqualified column name of a column reference."""
        self.check_qualifier(node)
        name = node.name if node.this.args.get("quoted") else node.name.lower()
        valid = SQL_COLUMNS[self.table]
        if name == SCORE:
            if allow_score:
                return name
            raise SqlError("score exists only with ORDER BY relevance('...'), and not in WHERE")
        if name not in valid:
            raise SqlError(
                f"unknown column {name!r} in {self.table}; valid columns: {', '.join(valid)}"
                + (", score (with relevance)" if self.table == MEMORIES else "")
            )
        return name


def _parse_select(text: str) -> exp.Select:
    """Exactly one plain SELECT over one table, with only the clauses we support."""
    try:
        statements = [s for s in sqlglot.parse(text) if s is not None]
    except (ParseError, TokenError) as exc:
        raise SqlError(f"syntax error: {ANSI_ESCAPES.sub('', str(exc))}") from exc
    except RecursionError as exc:  # sqlglot's parser recurses per nesting level
        raise SqlError("the query is nested too deeply (parentheses or NOT) to be read") from exc
    if not statements:
        raise SqlError("empty query: expected SELECT ... FROM memories|videos")
    if len(statements) > 1:
        raise SqlError(f"only one statement is allowed, got {len(statements)}")
    stmt = statements[0]
    if not isinstance(stmt, exp.Select):
        kind = stmt.this if isinstance(stmt, exp.Command) else stmt.key
        raise SqlError(f"only SELECT statements are allowed, got {str(kind).upper()}")
    for key, value in stmt.args.items():
        if value and key not in ALLOWED_CLAUSES:
            if key == "joins":
                raise SqlError("joins are not supported: query one table, memories or videos")
            raise SqlError(f"{CLAUSE_NAMES.get(key, key.upper())} is not supported")
    if any(n is not stmt for n in stmt.find_all(exp.Query, exp.Subquery, exp.Exists)):
        raise SqlError("subqueries are not supported: query one table, memories or videos")
    return stmt


def _from_table(stmt: exp.Select) -> tuple[str, str]:
    source = stmt.args.get("from_") or stmt.args.get("from")
    if source is None:
        raise SqlError("missing FROM: query memories or videos")
    table = source.this
    if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Identifier):
        raise SqlError(f"FROM takes one table name (memories or videos), got {table.sql()}")
    name = table.name if table.this.args.get("quoted") else table.name.lower()
    if table.args.get("db") or table.args.get("catalog") or name not in SQL_COLUMNS:
        raise SqlError(f"unknown table {table.sql()!r}: use one of {', '.join(SQL_COLUMNS)}")
    return name, table.alias


def _select_list(items: list[exp.Expression], scope: _Scope, has_score: bool) -> list[str]:
    columns: list[str] = []
    for item in items:
        if isinstance(item, exp.Star):
            columns += SQL_COLUMNS[scope.table] + ([SCORE] if has_score else [])
        elif isinstance(item, exp.Column) and isinstance(item.this, exp.Star):
            scope.check_qualifier(item)
            columns += SQL_COLUMNS[scope.table] + ([SCORE] if has_score else [])
        elif isinstance(item, exp.Column):
            columns.append(scope.column(item, allow_score=has_score))
        else:
            raise SqlError(f"the select list takes column names or *, got {item.sql()}")
    return list(dict.fromkeys(columns))


def _order_by(order: exp.Order | None, scope: _Scope) -> tuple[str | None, list[tuple[str, bool]]]:
    relevance: str | None = None
    keys: list[tuple[str, bool]] = []
    terms = order.expressions if order else []
    has_relevance = any(_is_relevance(term.this) for term in terms)
    for term in terms:
        node = term.this
        if _is_relevance(node):
            if relevance is not None:
                raise SqlError("only one relevance('...') term is allowed")
            if term.args.get("desc") is False:
                raise SqlError("relevance() always orders best first: remove ASC")
            relevance = _relevance_text(node, scope)
            keys.append((SCORE, True))
        elif isinstance(node, exp.Column):
            name = scope.column(node, allow_score=has_relevance)
            if name in UNSORTABLE:
                raise SqlError(f"cannot ORDER BY the list column {name}")
            keys.append((name, bool(term.args.get("desc"))))
        else:
            raise SqlError(f"ORDER BY takes columns or relevance('...'), got {node.sql()}")
    return relevance, keys


def _is_relevance(node: exp.Expression) -> bool:
    return isinstance(node, exp.Anonymous) and node.name.lower() == RELEVANCE


def _relevance_text(node: exp.Anonymous, scope: _Scope) -> str:
    if scope.table != MEMORIES:
        raise SqlError("relevance() searches memories only, not videos")
    args = node.expressions
    if len(args) != 1 or not (isinstance(args[0], exp.Literal) and args[0].is_string):
        raise SqlError("relevance() takes one string literal, e.g. relevance('who speaks?')")
    text = args[0].this.strip()
    if not text:
        raise SqlError("relevance() needs a non-empty question")
    return text


def _where(predicate: exp.Expression, scope: _Scope) -> str:
    """Check the predicate's size and every node of it, then regenerate it as SQL."""
    _check_where_size(predicate)
    tree = predicate.copy()
    _check_where_tree(tree, scope)
    return tree.sql(comments=False)


def _check_where_size(predicate: exp.Expression) -> None:
    """At most MAX_WHERE_TERMS conditions and MAX_WHERE_VALUES literals (counted without
    recursion, before anything recursive sees the tree)."""
    connectors = values = 0
    for node in predicate.walk():
        if isinstance(node, exp.And | exp.Or):
            connectors += 1
        elif isinstance(node, exp.Literal):
            values += 1
    if connectors + 1 > MAX_WHERE_TERMS:
        raise SqlError(
            f"the WHERE clause has {connectors + 1:,} conditions joined by AND/OR; at most "
            f"{MAX_WHERE_TERMS:,} are allowed (for a list of values use IN (...))"
        )
    if values > MAX_WHERE_VALUES:
        raise SqlError(
            f"the WHERE clause has {values:,} literal values; at most {MAX_WHERE_VALUES:,} "
            "are allowed"
        )


def _check_where_tree(root: exp.Expression, scope: _Scope) -> None:
    """Every node, depth first in reading order (the first problem is the one named);
    a stack rather than recursion, so a long AND/OR chain cannot overflow."""
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, exp.Column):
            name = scope.column(node)  # in place, so a bare-column root works too
            for part in ("table", "db", "catalog"):
                node.set(part, None)
            node.set("this", exp.to_identifier(name, quoted=node.this.args.get("quoted")))
            continue
        if isinstance(node, exp.Cast):
            _check_literal_cast(node)
            continue
        _check_where_node(node)
        stack.extend(reversed(list(node.iter_expressions())))


def _check_where_node(node: exp.Expression) -> None:
    if _is_relevance(node):
        raise SqlError("relevance() is only allowed in ORDER BY")
    if isinstance(node, exp.AggFunc):
        raise SqlError(f"aggregate {node.sql_name()} is not allowed in WHERE")
    if isinstance(node, exp.Anonymous):
        raise SqlError(f"unknown function {node.name}(); allowed: {FUNCTION_NAMES}")
    if not isinstance(node, WHERE_NODES) and type(node) not in FUNCTIONS:
        if isinstance(node, exp.Func):
            name = node.sql_name()
            raise SqlError(f"function {name} is not allowed; allowed: {FUNCTION_NAMES}")
        raise SqlError(f"unsupported expression in WHERE: {node.sql()}")


def _check_literal_cast(node: exp.Cast) -> None:
    """Only DATE '...' / TIMESTAMP '...' literals (sqlglot reads them as casts)."""
    kind = LITERAL_TYPES.get(node.to.this)
    value = node.this
    if kind is None or not (isinstance(value, exp.Literal) and value.is_string):
        raise SqlError(
            f"unsupported cast {node.sql()}: only DATE '...' and TIMESTAMP '...' literals"
        )
    try:
        (date if kind == "DATE" else datetime).fromisoformat(value.this)
    except ValueError as exc:
        raise SqlError(f"invalid {kind} literal {value.this!r}: {exc}") from exc


def _limit(limit: exp.Limit | None) -> int:
    if limit is None:
        return DEFAULT_LIMIT
    value = limit.expression
    if not (isinstance(value, exp.Literal) and not value.is_string and value.this.isdigit()):
        raise SqlError(f"LIMIT takes an integer between 1 and {MAX_LIMIT}, got {value.sql()}")
    n = int(value.this)
    if not 1 <= n <= MAX_LIMIT:
        raise SqlError(
            f"LIMIT must be between 1 and {MAX_LIMIT}, got {n} (page further with OFFSET)"
        )
    return n


def _offset(offset: exp.Offset | None) -> int:
    if offset is None:
        return 0
    value = offset.expression
    if not (isinstance(value, exp.Literal) and not value.is_string and value.this.isdigit()):
        raise SqlError(f"OFFSET takes an integer between 0 and {MAX_OFFSET:,}, got {value.sql()}")
    n = int(value.this)
    if n > MAX_OFFSET:
        raise SqlError(f"OFFSET must be between 0 and {MAX_OFFSET:,}, got {n:,}")
    return n


# ---- GROUP BY and aggregates -------------------------------------------------------------
def _is_grouped(stmt: exp.Select) -> bool:
    order = stmt.args.get("order")
    places = [*stmt.expressions, *(order.expressions if order else [])]
    return bool(stmt.args.get("group")) or any(
        next(node.find_all(exp.AggFunc), None) is not None for node in places
    )


def _compile_grouped(
    stmt: exp.Select, scope: _Scope, where: str | None, limit: int, offset: int
) -> CompiledQuery:
    """SELECT <grouped columns, aggregates> ... GROUP BY <columns> [ORDER BY ...]."""
    group = stmt.args.get("group")
    keys = [_group_key(node, scope) for node in (group.expressions if group else [])]
    columns: list[str] = []
    aggregates: list[Aggregate] = []
    for item in stmt.expressions:
        node, alias = (item.this, _alias(item)) if isinstance(item, exp.Alias) else (item, None)
        if isinstance(node, exp.AggFunc):
            aggregates.append(_aggregate(node, scope, alias))
            columns.append(aggregates[-1].name)
        elif isinstance(node, exp.Star) or (
            isinstance(node, exp.Column) and isinstance(node.this, exp.Star)
        ):
            raise SqlError("SELECT * cannot be combined with GROUP BY or aggregates: name them")
        elif isinstance(node, exp.Column) and alias is None:
            name = scope.column(node)
            if name not in keys:
                raise SqlError(
                    f"column {name} must be in GROUP BY or inside an aggregate ({AGGREGATE_NAMES})"
                )
            columns.append(name)
        else:
            raise SqlError(
                "with GROUP BY or aggregates the select list takes grouped columns and "
                f"aggregates ({AGGREGATE_NAMES}), got {item.sql()}"
            )
    duplicate = next((c for c in columns if columns.count(c) > 1), None)
    if duplicate is not None:
        raise SqlError(f"the result column {duplicate!r} appears twice: give one an alias")
    order = stmt.args.get("order")
    order_by = [
        (_group_order_key(term.this, scope, keys, aggregates), bool(term.args.get("desc")))
        for term in (order.expressions if order else [])
    ]
    return CompiledQuery(
        scope.table, columns, where, None, order_by, limit, offset, keys, aggregates
    )


def _alias(item: exp.Alias) -> str:
    identifier = item.args["alias"]
    return identifier.name if identifier.args.get("quoted") else identifier.name.lower()


def _group_key(node: exp.Expression, scope: _Scope) -> str:
    if not isinstance(node, exp.Column):
        raise SqlError(f"GROUP BY takes column names, got {node.sql()}")
    name = scope.column(node)
    if name in UNSORTABLE:
        raise SqlError(f"cannot GROUP BY the list column {name}")
    return name


def _aggregate(node: exp.AggFunc, scope: _Scope, alias: str | None) -> Aggregate:
    function = AGGREGATE_NODES.get(type(node))
    if function is None:
        raise SqlError(f"aggregate {node.sql_name()} is not supported; use {AGGREGATE_NAMES}")
    arg = node.this
    if isinstance(arg, exp.Distinct):
        raise SqlError(f"{node.sql()} is not supported: GROUP BY the column instead")
    if function == "count" and isinstance(arg, exp.Star):
        column = None
    elif isinstance(arg, exp.Column) and not node.expressions:
        column = scope.column(arg)
    else:
        raise SqlError(f"{function.upper()}() takes one column name, got {node.sql()}")
    kind = COLUMN_TYPES[scope.table][column] if column else None
    if kind is not None and pa.types.is_list(kind) and function != "count":
        raise SqlError(f"cannot {function.upper()} the list column {column}")
    numeric = kind is not None and (pa.types.is_integer(kind) or pa.types.is_floating(kind))
    if function in ("sum", "avg") and not numeric:
        raise SqlError(f"{function.upper()}({column}) needs a numeric column")
    return Aggregate(function, column, alias or f"{function}({column or '*'})")


def _group_order_key(
    node: exp.Expression, scope: _Scope, keys: list[str], aggregates: list[Aggregate]
) -> str:
    """A grouped query orders by a grouped column, an aggregate's alias or an aggregate
    (one not in the select list is computed too, and left out of the result)."""
    if _is_relevance(node):
        raise SqlError("relevance() cannot be combined with GROUP BY or aggregates")
    if isinstance(node, exp.AggFunc):
        wanted = _aggregate(node, scope, None)
        for agg in aggregates:
            if (agg.function, agg.column) == (wanted.function, wanted.column):
                return agg.name
        aggregates.append(wanted)
        return wanted.name
    if isinstance(node, exp.Column) and not node.table:
        name = node.name if node.this.args.get("quoted") else node.name.lower()
        if name in keys or any(agg.name == name for agg in aggregates):
            return name
    if isinstance(node, exp.Column):
        name = scope.column(node)
        raise SqlError(f"ORDER BY {name}: a grouped query orders by grouped columns or aggregates")
    raise SqlError(f"ORDER BY takes grouped columns or aggregates here, got {node.sql()}")


def execute(
    store: Any,
    compiled: CompiledQuery,
    query_vector: np.ndarray | None = None,
    visible: frozenset[str] | None = None,
) -> pa.Table:
    """Run a compiled query on a MemoryStore; ``query_vector`` is the question's (Q,) vector.

    ``visible``: when given, a query over ``memories`` returns (and counts, groups and
    pages) only rows of these videos (the query stage passes the catalog's ``done``
    videos); LIMIT and OFFSET count visible rows."""
    from storage.db import StorageError  # storage.lance imports nothing from here

    keep = visible if compiled.table == MEMORIES else None
    try:
        if compiled.grouped:
            result = _grouped_scan(store, compiled, keep)
        elif compiled.relevance is not None:
            result = _vector_search(store, compiled, _fetch(compiled, keep), query_vector, keep)
        else:
            fetch = [c for c in _fetch(compiled, keep) if c != SCORE]
            result = _filtered_scan(store, compiled, fetch, keep)
    except (SqlError, StorageError):
        raise
    except (ValueError, RuntimeError, OSError) as exc:
        raise SqlError(f"query failed: {exc}") from exc
    return result.select(compiled.columns)


def _fetch(compiled: CompiledQuery, keep: frozenset[str] | None) -> list[str]:
    """The stored columns a row query reads: its own, its ORDER BY's, and ``video_id``
    when the visibility filter needs it."""
    fetch = list(dict.fromkeys([*compiled.columns, *(c for c, _ in compiled.order_by)]))
    if keep is not None and "video_id" not in fetch:
        fetch.append("video_id")
    return fetch


def _sort_keys(compiled: CompiledQuery) -> list[tuple[str, str, str]]:
    """pyarrow sort keys; nulls last either way."""
    return [(c, "descending" if desc else "ascending", "at_end") for c, desc in compiled.order_by]


def _vector_search(
    store: Any,
    compiled: CompiledQuery,
    fetch: list[str],
    query_vector: np.ndarray | None,
    keep: frozenset[str] | None = None,
) -> pa.Table:
    """The ``offset + limit`` (visible) clips nearest to the question, ORDER BY, then the
    page. When hidden rows took some of the places, the search asks again for more
    (rarely: only a writer's commit in flight, or killed, leaves hidden rows)."""
    if query_vector is None:
        raise SqlError("relevance() needs the question encoded as a vector")
    vector = np.asarray(query_vector, dtype=np.float32).reshape(1, -1)  # (1, Q)
    window = compiled.offset + compiled.limit
    asked = window
    while True:
        found = store.search(vector, compiled.where, asked, fetch)
        result = found if keep is None else rows_of_videos(found, keep)
        if result.num_rows >= window or found.num_rows < asked:
            break  # enough, or every match was found
        asked *= 4
    ordered = result.slice(0, window).sort_by(_sort_keys(compiled))
    return ordered.slice(compiled.offset, compiled.limit)


def _scan(store: Any, compiled: CompiledQuery, fetch: list[str]) -> Any:
    """The filtered scan of only ``fetch`` (a LanceDB query, not yet run)."""
    query = store.open_table(compiled.table).search().select(fetch)
    return query.where(compiled.where) if compiled.where else query


def _visible_batches(reader: pa.RecordBatchReader, keep: frozenset[str] | None):
    for batch in reader:
        rows = pa.Table.from_batches([batch], schema=reader.schema)
        yield rows if keep is None else rows_of_videos(rows, keep)


def _filtered_scan(
    store: Any, compiled: CompiledQuery, fetch: list[str], keep: frozenset[str] | None = None
) -> pa.Table:
    """Filtered scan. With ORDER BY a running top-(offset + limit) over the batches, so
    memory stays near twice that however many rows match; without ORDER BY the rows in
    scan order (stable for one table version): Lance skips OFFSET itself unless the
    visibility filter must count visible rows."""
    query = _scan(store, compiled, fetch)
    if not compiled.order_by and keep is None:
        return query.offset(compiled.offset).limit(compiled.limit).to_arrow()
    window = compiled.offset + compiled.limit
    reader = query.limit(None).to_batches()
    keys = _sort_keys(compiled)
    held: list[pa.Table] = [reader.schema.empty_table()]
    rows = 0
    for batch in _visible_batches(reader, keep):
        held.append(batch)
        rows += batch.num_rows
        if keys and rows >= max(2 * window, SORT_EVERY_ROWS):  # now and then, not per batch
            held = [pa.concat_tables(held).sort_by(keys).slice(0, window)]
            rows = held[0].num_rows
        elif not keys and rows >= window:
            break  # the first rows are the answer: stop reading
    best = pa.concat_tables(held)
    best = best.sort_by(keys) if keys else best
    return best.slice(compiled.offset, compiled.limit)


def _grouped_scan(store: Any, compiled: CompiledQuery, keep: frozenset[str] | None) -> pa.Table:
    """GROUP BY / aggregates over the filtered scan of only the columns they read, then
    ORDER BY (by default the grouped columns, so that pages are stable) and the page."""
    needed = [*compiled.group_by, *(a.column for a in compiled.aggregates if a.column)]
    if keep is not None:
        needed.append("video_id")  # what the visibility filter reads
    fetch = list(dict.fromkeys(needed)) or ["video_id"]  # COUNT(*) alone reads one column
    reader = _scan(store, compiled, fetch).limit(None).to_batches()
    groups = aggregate_batches(
        _visible_batches(reader, keep), compiled.group_by, compiled.aggregates, reader.schema
    )
    keys = _sort_keys(compiled) or [(k, "ascending", "at_end") for k in compiled.group_by]
    ordered = groups.sort_by(keys) if keys else groups
    return ordered.slice(compiled.offset, compiled.limit)
