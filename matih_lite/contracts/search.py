"""The run filter language (MLflow's), parsed into data; stores compile it to parameters.

``metrics.auc > 0.85 and params.model = 'xgboost' and tags.team = 'growth'
and attributes.status = 'FINISHED'`` becomes a :class:`RunFilter` of four
:class:`Comparison` clauses, AND-ed. Nothing here builds SQL: a store maps each
clause to its own query with the values bound as parameters.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, Literal, NoReturn

import msgspec

from matih_lite.errors import InvalidInput

Kind = Literal["metric", "param", "tag", "attribute", "dataset"]
Op = Literal["=", "!=", ">", ">=", "<", "<=", "LIKE", "ILIKE", "IN", "NOT IN", "IS NULL", "IS NOT NULL"]


class Comparison(msgspec.Struct, frozen=True):
    """One clause: ``kind.key op value``.

    ``value`` is a float for metrics, an int for time attributes, a str for params,
    tags and text attributes, a tuple of str for IN / NOT IN, None for IS [NOT] NULL.
    """

    kind: Kind
    key: str
    op: Op
    value: float | int | str | tuple[str, ...] | None = None


class RunFilter(msgspec.Struct, frozen=True):
    """Clauses that must all hold. An empty filter matches every run."""

    clauses: tuple[Comparison, ...] = ()


class OrderBy(msgspec.Struct, frozen=True):
    """``metrics.auc DESC`` -> OrderBy("metric", "auc", ascending=False)."""

    kind: Kind
    key: str
    ascending: bool = True


ATTRIBUTES: dict[str, str] = {
    # name in filters -> type of value; aliases resolve to the canonical name below
    "run_id": "str",
    "run_name": "str",
    "status": "str",
    "user_id": "str",
    "artifact_uri": "str",
    "lifecycle_stage": "str",
    "start_time": "int",
    "end_time": "int",
}

ATTRIBUTE_ALIASES: dict[str, str] = {
    # other spellings MLflow clients send -> the canonical name in ATTRIBUTES
    "created": "start_time",
    "Created": "start_time",
    "id": "run_id",
    "name": "run_name",
    "runName": "run_name",
    "run name": "run_name",
    "Run name": "run_name",
    "Run Name": "run_name",
}

DATASET_KEYS: tuple[str, ...] = ("name", "digest", "context")
RUN_STATUSES: tuple[str, ...] = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
LIFECYCLE_STAGES: tuple[str, ...] = ("active", "deleted")

# --------------------------------------------------------------------------- parser
#
# A context-sensitive scanner (each step matches one regex at the cursor) driving a
# recursive-descent parser:
#
#   filter     := clause (AND clause)*
#   clause     := column comparator value
#   column     := PREFIX "." key
#   key        := BARE_KEY | `quoted` | "quoted" | 'quoted'
#   comparator := = | != | <> | > | >= | < | <= | LIKE | ILIKE | IN | NOT IN | IS NULL | IS NOT NULL
#   value      := NUMBER | STRING | "(" STRING ("," STRING)* ")"
#   order_by   := column [ASC | DESC] ("," column [ASC | DESC])*

_PREFIXES: dict[str, Kind] = {
    "metrics": "metric",
    "metric": "metric",
    "params": "param",
    "param": "param",
    "parameters": "param",
    "parameter": "param",
    "tags": "tag",
    "tag": "tag",
    "attributes": "attribute",
    "attribute": "attribute",
    "attr": "attribute",
    "run": "attribute",
    "datasets": "dataset",
    "dataset": "dataset",
}
_PREFIX_HINT = (
    "valid prefixes are metrics., params., tags., attributes. and datasets. "
    "(the singular forms, parameters., attr. and run. also work)"
)

_NUMERIC_OPS: tuple[Op, ...] = ("=", "!=", ">", ">=", "<", "<=")
_PARAM_TAG_OPS: tuple[Op, ...] = ("=", "!=", "LIKE", "ILIKE", "IN", "NOT IN", "IS NULL", "IS NOT NULL")
_TEXT_ATTRIBUTE_OPS: tuple[Op, ...] = ("=", "!=", "LIKE", "ILIKE", "IN", "NOT IN")
_DATASET_OPS: tuple[Op, ...] = ("=", "!=", "LIKE", "ILIKE", "IN", "NOT IN")
_ALL_OPS = "=, !=, >, >=, <, <=, LIKE, ILIKE, IN, NOT IN, IS NULL, IS NOT NULL"
_ENUMERATED: dict[str, tuple[str, ...]] = {"status": RUN_STATUSES, "lifecycle_stage": LIFECYCLE_STAGES}
_INT64 = 2**63

_WS = re.compile(r"\s*")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BARE_KEY = re.compile(r"[A-Za-z0-9_./\-]+")
_SYMBOL_OP = re.compile(r"!=|<>|>=|<=|=|>|<")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?(?![A-Za-z0-9_.])")
_INTEGER = re.compile(r"[+-]?[0-9]+(?![A-Za-z0-9_.])")
_NEAR = re.compile(r"[A-Za-z0-9_./+\-]+|[!<>=]+|'[^']*'?|\"[^\"]*\"?|`[^`]*`?|\S")


def _allowed_ops(kind: Kind, key: str) -> tuple[Op, ...]:
    if kind == "metric":
        return _NUMERIC_OPS
    if kind in ("param", "tag"):
        return _PARAM_TAG_OPS
    if kind == "dataset":
        return _DATASET_OPS
    return _NUMERIC_OPS if ATTRIBUTES[key] == "int" else _TEXT_ATTRIBUTE_OPS


def _describe(kind: Kind, key: str) -> str:
    if kind == "attribute":
        return f"the {'time' if ATTRIBUTES[key] == 'int' else 'text'} attribute {key!r}"
    return {"metric": "metrics", "param": "params", "tag": "tags", "dataset": "datasets"}[kind]


class _Scanner:
    """Cursor over one input string; every parse step reads from here and fails through :meth:`fail`."""

    def __init__(self, text: str, label: str, detail: dict[str, Any] | None = None) -> None:
        self.text = text
        self.pos = 0
        self.label = label
        self.extra = detail or {}

    # ---- lexing

    def skip_ws(self) -> None:
        self.pos = _WS.match(self.text, self.pos).end()  # type: ignore[union-attr]

    def at_end(self) -> bool:
        self.skip_ws()
        return self.pos >= len(self.text)

    def match(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        m = pattern.match(self.text, self.pos)
        if m is not None:
            self.pos = m.end()
        return m

    def literal(self, char: str) -> bool:
        if self.text.startswith(char, self.pos):
            self.pos += len(char)
            return True
        return False

    def word(self) -> str | None:
        """The next word upper-cased (the cursor moves past it), or None (the cursor stays)."""
        m = self.match(_WORD)
        return m.group().upper() if m else None

    def quoted(self) -> str:
        """A '...' or "..." string at the cursor, unescaped.

        Inside, ``\\\\``, ``\\'`` and ``\\"`` stand for the character after the backslash, a
        doubled quote stands for one, and any other backslash is kept as written (so LIKE
        patterns such as ``'50\\%'`` reach the store unchanged).
        """
        text, start = self.text, self.pos
        quote = text[start]
        out: list[str] = []
        i, n = start + 1, len(text)
        while i < n:
            c = text[i]
            if c == "\\" and i + 1 < n:
                nxt = text[i + 1]
                out.append(nxt if nxt in "\\'\"" else c + nxt)
                i += 2
            elif c == quote:
                if i + 1 < n and text[i + 1] == quote:
                    out.append(quote)
                    i += 2
                else:
                    self.pos = i + 1
                    return "".join(out)
            else:
                out.append(c)
                i += 1
        self.fail(start, f"unterminated string: no closing {quote}")

    def backticked(self) -> str:
        """A `...` key at the cursor; a doubled backtick stands for one."""
        text, start = self.text, self.pos
        out: list[str] = []
        i, n = start + 1, len(text)
        while i < n:
            c = text[i]
            if c == "`":
                if i + 1 < n and text[i + 1] == "`":
                    out.append("`")
                    i += 2
                    continue
                self.pos = i + 1
                return "".join(out)
            out.append(c)
            i += 1
        self.fail(start, "unterminated quoted key: no closing `")

    # ---- errors

    def fail(self, pos: int, message: str, token: str | None = None) -> NoReturn:
        if token is None:
            m = _NEAR.match(self.text, pos) if pos < len(self.text) else None
            token = m.group() if m else ""
        near = repr(token if len(token) <= 40 else token[:37] + "...") if token else "end of input"
        raise InvalidInput(
            f"invalid {self.label} at position {pos} near {near}: {message}",
            detail={"position": pos, "token": token, **self.extra},
        )

    # ---- grammar

    def column(self, what: str) -> tuple[Kind, str]:
        """``prefix.key``: the kind and the key, attribute aliases resolved."""
        self.skip_ws()
        start = self.pos
        if start >= len(self.text):
            self.fail(start, f"expected {what} like metrics.auc")
        m = self.match(_WORD)
        if m is None:
            if self.text[start] == "(":
                self.fail(start, "parentheses are not supported; join clauses with AND")
            self.fail(start, f"expected {what} like metrics.auc; {_PREFIX_HINT}")
        kind = _PREFIXES.get(m.group())
        bare = ATTRIBUTE_ALIASES.get(m.group(), m.group())
        if kind is None and bare in ATTRIBUTES and not self.text.startswith(".", self.pos):
            return "attribute", bare  # MLflow reads a bare attribute name (``start_time DESC``) as attributes.*
        if kind is None:
            hint = f" (did you mean attributes.{m.group()}?)" if m.group() in ATTRIBUTES else ""
            self.fail(start, f"unknown entity {m.group()!r}{hint}; {_PREFIX_HINT}", token=m.group())
        if not self.literal("."):
            self.fail(self.pos, f"expected '.' and a key after {m.group()!r}")
        key_start = self.pos
        key = self.key(m.group())
        key_token = self.text[key_start : self.pos]
        if kind == "attribute":
            key = ATTRIBUTE_ALIASES.get(key, key)
            if key not in ATTRIBUTES:
                self.fail(key_start, f"unknown attribute; valid attributes are {', '.join(ATTRIBUTES)}",
                          token=key_token)
        elif kind == "dataset" and key not in DATASET_KEYS:
            self.fail(key_start, f"unknown dataset field; valid fields are {', '.join(DATASET_KEYS)}", token=key_token)
        return kind, key

    def key(self, prefix: str) -> str:
        start = self.pos
        c = self.text[start] if start < len(self.text) else ""
        if c == "`":
            key = self.backticked()
        elif c in ("'", '"'):
            key = self.quoted()
        else:
            m = self.match(_BARE_KEY)
            if m is None:
                self.fail(start, f"expected a key after '{prefix}.' (quote it with backticks if it has spaces)")
            key = m.group()
        if key == "":
            self.fail(start, "empty key")
        return key

    def comparator(self) -> tuple[Op, int]:
        self.skip_ws()
        start = self.pos
        m = self.match(_SYMBOL_OP)
        if m is not None:
            return ("!=" if m.group() == "<>" else m.group()), start  # type: ignore[return-value]
        w = self.word()
        if w in ("LIKE", "ILIKE", "IN"):
            return w, start  # type: ignore[return-value]
        if w == "NOT":
            self.skip_ws()
            at = self.pos
            if self.word() == "IN":
                return "NOT IN", start
            self.fail(at, "expected IN after NOT")
        if w == "IS":
            self.skip_ws()
            at = self.pos
            second = self.word()
            if second == "NULL":
                return "IS NULL", start
            if second == "NOT":
                self.skip_ws()
                at = self.pos
                if self.word() == "NULL":
                    return "IS NOT NULL", start
            self.fail(at, "expected NULL or NOT NULL after IS")
        self.fail(start, f"expected a comparator ({_ALL_OPS})")

    def string_value(self, kind: Kind, key: str, check: bool) -> str:
        self.skip_ws()
        start = self.pos
        if start >= len(self.text) or self.text[start] not in ("'", '"'):
            self.fail(start, f"expected a quoted string value for {_describe(kind, key)} (e.g. 'my-value')")
        value = self.quoted()
        allowed = _ENUMERATED.get(key) if kind == "attribute" else None
        if check and allowed is not None and value not in allowed:
            self.fail(start, f"{key} must be one of {', '.join(allowed)}", token=self.text[start : self.pos])
        return value

    def number(self, kind: Kind, key: str) -> float | int:
        self.skip_ws()
        start = self.pos
        if kind == "metric":
            m = self.match(_NUMBER)
            if m is None:
                self.fail(start, "expected a number for metrics (e.g. 0.85, -3, 1e-4)")
            value = float(m.group())
            if math.isinf(value):
                self.fail(start, "number out of range")
            return value
        m = self.match(_INTEGER)
        if m is None:
            self.fail(start, f"expected an integer (milliseconds since the epoch) for {_describe(kind, key)}")
        whole = int(m.group())
        if not -_INT64 <= whole < _INT64:
            self.fail(start, "integer out of range")
        return whole

    def in_list(self, kind: Kind, key: str) -> tuple[str, ...]:
        self.skip_ws()
        if not self.literal("("):
            self.fail(self.pos, "expected '(' to start the list of values, e.g. IN ('a', 'b')")
        values: list[str] = []
        while True:
            self.skip_ws()
            if not values and self.text.startswith(")", self.pos):
                self.fail(self.pos, "the list needs at least one value")
            values.append(self.string_value(kind, key, check=True))
            self.skip_ws()
            if self.literal(","):
                continue
            if self.literal(")"):
                return tuple(values)
            self.fail(self.pos, "expected ',' or ')' in the list of values")

    def clause(self) -> Comparison:
        kind, key = self.column("a clause")
        op, op_start = self.comparator()
        allowed = _allowed_ops(kind, key)
        if op not in allowed:
            self.fail(
                op_start,
                f"{_describe(kind, key)} accept{'s' if kind == 'attribute' else ''} only {', '.join(allowed)}",
                token=self.text[op_start : self.pos],
            )
        value: float | int | str | tuple[str, ...] | None
        if op in ("IS NULL", "IS NOT NULL"):
            value = None
        elif op in ("IN", "NOT IN"):
            value = self.in_list(kind, key)
        elif kind == "metric" or (kind == "attribute" and ATTRIBUTES[key] == "int"):
            value = self.number(kind, key)
        else:
            value = self.string_value(kind, key, check=op in ("=", "!="))
        return Comparison(kind=kind, key=key, op=op, value=value)


def parse_filter(text: str | None) -> RunFilter:
    """Parse an MLflow ``search_runs`` filter string into a :class:`RunFilter`.

    Clauses ``<entity>.<key> <comparator> <value>`` are joined with ``AND`` (any case);
    OR and parentheses are not supported. None, "" and whitespace give the empty filter,
    which matches every run. Metric values become floats, ``start_time``/``end_time``
    values ints, quoted values strs, IN lists tuples of str, IS [NOT] NULL None; attribute
    aliases (``created``, ``id``, ``name``, ``runName``...) resolve to canonical names.

    Raises :class:`~matih_lite.errors.InvalidInput` (and nothing else) for any malformed
    text; the message quotes the offending token and its 0-based position, which are also
    in ``detail["token"]`` and ``detail["position"]``.
    """
    if text is None:
        return RunFilter()
    if not isinstance(text, str):
        raise InvalidInput(f"filter must be a string, got {type(text).__name__}", detail={"position": 0, "token": ""})
    sc = _Scanner(text, "filter")
    if sc.at_end():
        return RunFilter()
    clauses = [sc.clause()]
    while not sc.at_end():
        start = sc.pos
        joiner = sc.word()
        if joiner == "AND":
            clauses.append(sc.clause())
        elif joiner == "OR":
            sc.fail(start, "OR is not supported; clauses can only be joined with AND")
        else:
            sc.fail(start, "expected AND or the end of the filter")
    return RunFilter(clauses=tuple(clauses))


def _parse_order_by_text(text: str, detail: dict[str, Any] | None = None) -> list[OrderBy]:
    sc = _Scanner(text, "order_by", detail)
    out: list[OrderBy] = []
    if sc.at_end():
        return out
    while True:
        kind, key = sc.column("a column")
        sc.skip_ws()
        start = sc.pos
        ascending = True
        direction = sc.word()
        if direction == "DESC":
            ascending = False
        elif direction is not None and direction != "ASC":
            sc.fail(start, "expected ASC, DESC, ',' or the end")
        out.append(OrderBy(kind=kind, key=key, ascending=ascending))
        if sc.at_end():
            return out
        if not sc.literal(","):
            sc.fail(sc.pos, "expected ',' or the end" if direction else "expected ASC, DESC, ',' or the end")


def parse_order_by(items: str | Sequence[str] | None) -> tuple[OrderBy, ...]:
    """Parse MLflow ``order_by`` items (``metrics.auc DESC``, ``attributes.start_time``) into :class:`OrderBy`.

    ``items`` is None, one comma-separated string, or a sequence of such strings (each
    element may itself hold several comma-separated items). The direction is ASC or DESC
    in any case, ascending when left out; keys may be quoted like in filters
    (`` metrics.`my metric` desc ``). None or "" give ``()``; a blank element of a
    sequence is an error.

    Raises :class:`~matih_lite.errors.InvalidInput` (and nothing else) for malformed
    items; ``detail`` holds ``position``, ``token`` and, for a sequence, the ``item`` index.
    """
    if items is None:
        return ()
    if isinstance(items, str):
        return tuple(_parse_order_by_text(items))
    try:
        elements = list(items)
    except TypeError:
        raise InvalidInput(
            f"order_by must be a string or a list of strings, got {type(items).__name__}",
            detail={"position": 0, "token": ""},
        ) from None
    out: list[OrderBy] = []
    for index, item in enumerate(elements):
        if not isinstance(item, str):
            raise InvalidInput(
                f"order_by item {index} must be a string, got {type(item).__name__}",
                detail={"position": 0, "token": "", "item": index},
            )
        parsed = _parse_order_by_text(item, {"item": index})
        if not parsed:
            raise InvalidInput(f"order_by item {index} is empty", detail={"position": 0, "token": "", "item": index})
        out.extend(parsed)
    return tuple(out)
