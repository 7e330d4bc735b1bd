"""The SQL-like search API: one SELECT over ``memories`` or ``videos`` -> a LanceDB query.

    SELECT video_id, t_start, t_end, score FROM memories
    WHERE archive = 'news' AND t_start > 600
    ORDER BY relevance('who speaks at the podium?') LIMIT 10

The text is parsed by sqlglot (a real parser), checked against the table's columns and a
small whitelist of functions, and the WHERE clause is regenerated from the checked AST, so
nothing the user typed reaches Lance unparsed. ``relevance('...')`` picks the ``limit``
clips nearest to the question (vector search, WHERE as pre-filter); in ORDER BY it sorts
as ``score DESC`` and may be combined with other columns, which then re-order those rows.
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

from schemas.tables import MEMORIES, SQL_COLUMNS, VIDEOS_SCHEMA
from storage.catalog import rows_of_videos

DEFAULT_LIMIT = 10
MAX_LIMIT = 10_000
SCORE = "score"
RELEVANCE = "relevance"
# Columns pyarrow cannot sort (lists).
UNSORTABLE = {f.name for f in VIDEOS_SCHEMA if pa.types.is_list(f.type)} | {"tags"}
ALLOWED_CLAUSES = {"expressions", "from_", "from", "where", "order", "limit"}
CLAUSE_NAMES = {
    "group": "GROUP BY",
    "having": "HAVING",
    "with_": "WITH (common table expressions)",
    "with": "WITH (common table expressions)",
    "distinct": "DISTINCT",
    "offset": "OFFSET",
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


def compile_sql(text: str) -> CompiledQuery:
    """Parse and check one SELECT statement; raise SqlError naming what is not allowed."""
    stmt = _parse_select(text)
    table, alias = _from_table(stmt)
    scope = _Scope(table, alias)
    relevance, order_by = _order_by(stmt.args.get("order"), scope)
    columns = _select_list(stmt.expressions, scope, relevance is not None)
    where_node = stmt.args.get("where")
    where = _where(where_node.this, scope) if where_node else None
    limit = _limit(stmt.args.get("limit"))
    return CompiledQuery(table, columns, where, relevance, order_by, limit)


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
    aggregate = next(stmt.find_all(exp.AggFunc), None)
    if aggregate is not None:
        raise SqlError(f"aggregate functions are not supported ({aggregate.sql_name()})")
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
    """Check every node of the predicate, then regenerate it as SQL from the AST."""
    tree = predicate.copy()
    _check_where_node(tree, scope)
    return tree.sql(comments=False)


def _check_where_node(node: exp.Expression, scope: _Scope) -> None:
    if isinstance(node, exp.Column):
        name = scope.column(node)  # in place, so a bare-column root works too
        for part in ("table", "db", "catalog"):
            node.set(part, None)
        node.set("this", exp.to_identifier(name, quoted=node.this.args.get("quoted")))
        return
    if isinstance(node, exp.Cast):
        _check_literal_cast(node)
        return
    if _is_relevance(node):
        raise SqlError("relevance() is only allowed in ORDER BY")
    if isinstance(node, exp.Anonymous):
        raise SqlError(f"unknown function {node.name}(); allowed: {FUNCTION_NAMES}")
    if not isinstance(node, WHERE_NODES) and type(node) not in FUNCTIONS:
        if isinstance(node, exp.Func):
            name = node.sql_name()
            raise SqlError(f"function {name} is not allowed; allowed: {FUNCTION_NAMES}")
        raise SqlError(f"unsupported expression in WHERE: {node.sql()}")
    for child in list(node.iter_expressions()):
        _check_where_node(child, scope)


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
        raise SqlError(f"LIMIT must be between 1 and {MAX_LIMIT}, got {n}")
    return n


def execute(
    store: Any,
    compiled: CompiledQuery,
    query_vector: np.ndarray | None = None,
    visible: frozenset[str] | None = None,
) -> pa.Table:
    """Run a compiled query on a MemoryStore; ``query_vector`` is the question's (Q,) vector.

    ``visible``: when given, a query over ``memories`` returns only rows of these videos
    (the query stage passes the catalog's ``done`` videos); LIMIT counts visible rows."""
    from storage.db import StorageError  # storage.lance imports nothing from here

    keep = visible if compiled.table == MEMORIES else None
    fetch = list(dict.fromkeys([*compiled.columns, *(c for c, _ in compiled.order_by)]))
    if keep is not None and "video_id" not in fetch:
        fetch.append("video_id")  # what the visibility filter reads
    try:
        if compiled.relevance is not None:
            result = _vector_search(store, compiled, fetch, query_vector, keep)
        else:
            result = _filtered_scan(store, compiled, [c for c in fetch if c != SCORE], keep)
    except (SqlError, StorageError):
        raise
    except (ValueError, RuntimeError, OSError) as exc:
        raise SqlError(f"query failed: {exc}") from exc
    return result.select(compiled.columns)


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
    """The ``limit`` (visible) clips nearest to the question, then ORDER BY. When hidden
    rows took some of the places, the search asks again for more (rarely: only a writer's
    commit in flight, or killed, leaves hidden rows)."""
    if query_vector is None:
        raise SqlError("relevance() needs the question encoded as a vector")
    vector = np.asarray(query_vector, dtype=np.float32).reshape(1, -1)  # (1, Q)
    asked = compiled.limit
    while True:
        found = store.search(vector, compiled.where, asked, fetch)
        result = found if keep is None else rows_of_videos(found, keep)
        if result.num_rows >= compiled.limit or found.num_rows < asked:
            break  # enough, or every match was found
        asked *= 4
    return result.slice(0, compiled.limit).sort_by(_sort_keys(compiled))


def _filtered_scan(
    store: Any, compiled: CompiledQuery, fetch: list[str], keep: frozenset[str] | None = None
) -> pa.Table:
    """Filtered scan; with ORDER BY a running top-``limit`` over the batches, so memory
    stays at limit + one batch however many rows match. Without ORDER BY the first
    ``limit`` (visible) rows."""
    query = store.open_table(compiled.table).search().select(fetch)
    if compiled.where:
        query = query.where(compiled.where)
    if not compiled.order_by and keep is None:
        return query.limit(compiled.limit).to_arrow()
    reader = query.limit(None).to_batches()
    best = reader.schema.empty_table()
    keys = _sort_keys(compiled)
    for batch in reader:
        rows = pa.Table.from_batches([batch], schema=reader.schema)
        if keep is not None:
            rows = rows_of_videos(rows, keep)
        merged = pa.concat_tables([best, rows])
        best = (merged.sort_by(keys) if keys else merged).slice(0, compiled.limit)
        if not keys and best.num_rows >= compiled.limit:
            break  # the first rows are the answer: stop reading
    return best
