"""User SQL filters (``--where``, the server's ``where``): parsed, checked, re-written.

A filter is parsed with sqlglot and only this subset is accepted: comparisons (``= != <> < <= > >=``,
``BETWEEN``), ``AND`` / ``OR`` / ``NOT``, ``IN (...)`` lists, ``LIKE`` / ``ILIKE``, ``IS [NOT] NULL``,
``array_has(column, value)`` and ``array_has_any(column, [values])``, over plain column names and
literals. Anything else (subqueries, other functions, several statements, casts) is refused with a
:class:`FilterError` naming what was refused. LanceDB receives SQL re-written from the checked tree,
never the user's text, so what runs is exactly what was checked.

Across tables: :meth:`Filter.missing` tells which of the filter's columns a table lacks, so a
search over several targets applies the filter to the tables that have its columns and names the
ones skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import sqlglot
from sqlglot import exp

from .errors import StoreError

#: Functions a filter may call (array columns such as ``labels``).
ALLOWED_FUNCTIONS = ("array_has", "array_has_any")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_COMPARISONS = {exp.EQ: "=", exp.NEQ: "!=", exp.GT: ">", exp.GTE: ">=", exp.LT: "<", exp.LTE: "<="}


class FilterError(StoreError, ValueError):
    """A filter that is not in the accepted SQL subset, or that no searched table can take."""


@dataclass(frozen=True)
class Filter:
    """A checked filter: the SQL to hand to LanceDB and the columns it reads."""

    text: str
    sql: str
    columns: frozenset[str]

    def missing(self, table_columns: Iterable[str]) -> list[str]:
        """The filter's columns that a table with ``table_columns`` lacks (sorted)."""
        return sorted(self.columns - set(table_columns))


def parse_filter(text: str) -> Filter:
    """Parse and check ``text``; raises :class:`FilterError` naming what is not allowed."""
    if not text or not text.strip():
        raise FilterError("empty filter")
    try:
        trees = sqlglot.parse(text)
    except sqlglot.errors.SqlglotError as exc:
        errors = getattr(exc, "errors", None) or [{}]
        why = errors[0].get("description") or re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
        raise FilterError(f"cannot parse the filter {text!r}: {' '.join(str(why).split())[:200]}") from None
    trees = [t for t in trees if t is not None]
    if len(trees) != 1:
        raise FilterError("a filter is one expression, not several statements")
    columns: set[str] = set()
    sql = _render(trees[0], columns)
    return Filter(text=text, sql=sql, columns=frozenset(columns))


def _refuse(node: exp.Expression) -> FilterError:
    if isinstance(node, exp.Subquery | exp.Select | exp.Query):
        return FilterError("subqueries are not allowed in a filter")
    if isinstance(node, exp.Func):
        name = node.sql_name() if not isinstance(node, exp.Anonymous) else str(node.name)
        return FilterError(f"function {name.lower()}() is not allowed in a filter "
                           f"(allowed: {', '.join(ALLOWED_FUNCTIONS)})")
    return FilterError(f"{node.key.upper()} is not allowed in a filter (near {node.sql()[:60]!r}); use "
                       "comparisons, AND/OR/NOT, IN, LIKE, IS NULL, array_has, array_has_any")


def _render(node: exp.Expression, columns: set[str]) -> str:  # noqa: C901, PLR0911, PLR0912 - one case per node
    """SQL for a checked node; collects column names into ``columns``."""
    r = lambda n: _render(n, columns)  # noqa: E731
    if isinstance(node, exp.And | exp.Or):
        op = "AND" if isinstance(node, exp.And) else "OR"
        return f"({r(node.this)} {op} {r(node.expression)})"
    if isinstance(node, exp.Not):
        return f"(NOT {r(node.this)})"
    if isinstance(node, exp.Paren):
        return r(node.this)
    for kind, op in _COMPARISONS.items():
        if type(node) is kind:
            return f"({r(node.this)} {op} {r(node.expression)})"
    if isinstance(node, exp.Between):
        return f"({r(node.this)} BETWEEN {r(node.args['low'])} AND {r(node.args['high'])})"
    if isinstance(node, exp.In):
        if node.args.get("query") is not None or node.args.get("unnest") is not None:
            raise FilterError("subqueries are not allowed in a filter")
        return f"({r(node.this)} IN ({', '.join(r(e) for e in node.expressions)}))"
    if isinstance(node, exp.Like | exp.ILike):
        if node.args.get("escape") is not None:
            raise FilterError("LIKE ... ESCAPE is not allowed in a filter")
        op = "LIKE" if isinstance(node, exp.Like) else "ILIKE"
        return f"({r(node.this)} {op} {r(node.expression)})"
    if isinstance(node, exp.Is):
        if not isinstance(node.expression, exp.Null):
            raise FilterError("only IS NULL / IS NOT NULL are allowed in a filter")
        return f"({r(node.this)} IS NULL)"
    if isinstance(node, exp.ArrayContains):  # sqlglot's name for array_has(col, value)
        return f"array_has({r(node.this)}, {r(node.expression)})"
    if isinstance(node, exp.Anonymous) and str(node.name).lower() in ALLOWED_FUNCTIONS:
        args = node.expressions
        if len(args) != 2:
            raise FilterError(f"{str(node.name).lower()}() takes 2 arguments (a column and a value)")
        return f"{str(node.name).lower()}({r(args[0])}, {r(args[1])})"
    if isinstance(node, exp.Array):
        return "[" + ", ".join(r(e) for e in node.expressions) + "]"
    if isinstance(node, exp.Column):
        if node.table or not _NAME.match(node.name):
            raise FilterError(f"column {node.sql()!r} is not a plain column name")
        columns.add(node.name)
        return node.name
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
        return f"-{r(node.this)}"
    if isinstance(node, exp.Literal):
        if node.is_string:
            return "'" + node.this.replace("'", "''") + "'"
        float(node.this)  # numbers only
        return node.this
    if isinstance(node, exp.Boolean):
        return "TRUE" if node.this else "FALSE"
    if isinstance(node, exp.Null):
        return "NULL"
    raise _refuse(node)


def combine(*parts: str | None) -> str | None:
    """``(a) AND (b)`` of the non-empty SQL parts, or ``None``."""
    ps = [f"({p})" for p in parts if p]
    return " AND ".join(ps) if ps else None
