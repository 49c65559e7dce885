"""MLflow's search filters and orderings, one parser for the experiments, logged-model and registry routes.

``parse_simple_filter`` reads ``name LIKE 'x%' AND tags.team = 'a'`` (clauses joined with AND, as
MLflow's filters are) into ``(kind, key, op, value)`` clauses, and :func:`matches` checks them
against a record in memory; values are data, never SQL. Runs are searched in the store instead:
:func:`run_filter` and :func:`run_order_by` only rewrite MLflow's bare column names for the run
filter parser (:mod:`matih_lite.contracts.search`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from matih_lite.contracts.search import ATTRIBUTE_ALIASES as RUN_ATTRIBUTE_ALIASES
from matih_lite.contracts.search import ATTRIBUTES as RUN_ATTRIBUTES
from matih_lite.errors import InvalidInput

# ---- a small filter language for experiments and logged models -------------------------------------
_TOKEN = re.compile(r"""\s*(?:
    (?P<str>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.)*")
  | (?P<bt>`[^`]*`)
  | (?P<op>!=|<>|>=|<=|=|<|>)
  | (?P<lp>\() | (?P<rp>\)) | (?P<comma>,)
  | (?P<word>[\w.\-/:+]+)
)""", re.VERBOSE)
_KINDS = {"attribute": "attribute", "attributes": "attribute", "attr": "attribute", "tags": "tag", "tag": "tag",
          "params": "param", "param": "param", "metrics": "metric", "metric": "metric"}


def _spans(text: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise InvalidInput(f"invalid filter at position {pos}: {text[pos:pos + 20]!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    return out


def _tokens(text: str) -> list[tuple[str, str]]:
    return [(kind, tok) for kind, tok, _ in _spans(text)]


def _bare_attribute(token: str) -> bool:
    return "." not in token and (token in RUN_ATTRIBUTES or token in RUN_ATTRIBUTE_ALIASES)


def run_filter(text: str | None) -> str | None:
    """MLflow reads a bare column (``status = 'FINISHED'``) as an attribute; say so for the run filter parser."""
    if not text or not text.strip():
        return None
    try:
        spans = _spans(text)
    except InvalidInput:
        return text  # the parser says what is wrong with it
    starts = [start for i, (kind, tok, start) in enumerate(spans)
              if kind == "word" and _bare_attribute(tok)
              and (i == 0 or (spans[i - 1][0] == "word" and spans[i - 1][1].upper() == "AND"))]
    for start in reversed(starts):
        text = f"{text[:start]}attributes.{text[start:]}"
    return text


def run_order_by(items: list[str]) -> list[str] | None:
    """MLflow's ``order_by`` for runs, bare columns read as attributes (``start_time DESC``)."""
    out = []
    for item in items:
        for part in (item.split(",") if not any(q in item for q in "`'\"") else [item]):
            if not part.strip():
                continue
            column = part.strip().split()[0]
            out.append(f"attributes.{part.strip()}" if _bare_attribute(column) else part.strip())
    return out or None


def _unquote(token: str) -> str:
    quote = token[0]
    body = token[1:-1]
    if quote == "`":
        return body
    return re.sub(r"\\(.)", r"\1", body.replace(quote * 2, quote))


def parse_simple_filter(text: str | None, attributes: dict[str, str]) -> list[tuple[str, str, str, Any]]:
    """``name LIKE 'x%' AND tags.team = 'a'`` -> [(kind, key, op, value)]; ``attributes`` maps names to types."""
    if not text or not text.strip():
        return []
    toks = _tokens(text)
    clauses: list[tuple[str, str, str, Any]] = []
    i = 0

    def take() -> tuple[str, str]:
        nonlocal i
        if i >= len(toks):
            raise InvalidInput(f"invalid filter {text!r}: it ends too early")
        i += 1
        return toks[i - 1]

    while True:
        kind, tok = take()
        if kind == "word" and "." in tok and tok.split(".", 1)[0].lower() in _KINDS:
            prefix, key = tok.split(".", 1)
            entity = _KINDS[prefix.lower()]
            if not key:
                k2, t2 = take()
                if k2 not in ("str", "bt"):
                    raise InvalidInput(f"invalid filter {text!r}: expected a key after {tok!r}")
                key = _unquote(t2)
        elif kind in ("word", "bt", "str"):
            entity, key = "attribute", (tok if kind == "word" else _unquote(tok))
        else:
            raise InvalidInput(f"invalid filter {text!r}: expected a column, got {tok!r}")
        if entity == "attribute" and key not in attributes:
            raise InvalidInput(f"invalid filter {text!r}: unknown attribute {key!r}; valid attributes are "
                               f"{', '.join(sorted(attributes))}")
        kind, tok = take()
        if kind == "op":
            op = "!=" if tok == "<>" else tok
        elif kind == "word" and tok.upper() in ("LIKE", "ILIKE", "IN"):
            op = tok.upper()
        elif kind == "word" and tok.upper() == "NOT":
            if take()[1].upper() != "IN":
                raise InvalidInput(f"invalid filter {text!r}: expected IN after NOT")
            op = "NOT IN"
        else:
            raise InvalidInput(f"invalid filter {text!r}: expected a comparator, got {tok!r}")
        numeric = entity == "metric" or (entity == "attribute" and attributes[key] == "int")
        if op in ("IN", "NOT IN"):
            if take()[0] != "lp":
                raise InvalidInput(f"invalid filter {text!r}: expected '(' after {op}")
            values = []
            while True:
                k2, t2 = take()
                if k2 != "str":
                    raise InvalidInput(f"invalid filter {text!r}: IN takes quoted strings")
                values.append(_unquote(t2))
                k3, _ = take()
                if k3 == "rp":
                    break
                if k3 != "comma":
                    raise InvalidInput(f"invalid filter {text!r}: expected ',' or ')'")
            value: Any = tuple(values)
        else:
            k2, t2 = take()
            if k2 == "str":
                value = _unquote(t2)
            elif k2 == "word":
                try:
                    value = float(t2)
                except ValueError:
                    raise InvalidInput(f"invalid filter {text!r}: expected a value, got {t2!r}") from None
            else:
                raise InvalidInput(f"invalid filter {text!r}: expected a value, got {t2!r}")
            if numeric:
                try:
                    value = float(value)
                except ValueError:
                    raise InvalidInput(f"invalid filter {text!r}: {key!r} compares with numbers") from None
                if op in ("LIKE", "ILIKE"):
                    raise InvalidInput(f"invalid filter {text!r}: {key!r} does not support {op}")
            elif not isinstance(value, str):
                raise InvalidInput(f"invalid filter {text!r}: {key!r} compares with quoted strings")
        clauses.append((entity, key, op, value))
        if i >= len(toks):
            return clauses
        kind, tok = take()
        if not (kind == "word" and tok.upper() == "AND"):
            raise InvalidInput(f"invalid filter {text!r}: join clauses with AND, got {tok!r}")


def _like(pattern: str, value: str, insensitive: bool) -> bool:
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE | re.DOTALL if insensitive else re.DOTALL) is not None


def _holds(op: str, actual: Any, expected: Any) -> bool:
    if actual is None:
        return False
    if op in ("IN", "NOT IN"):
        return (str(actual) in expected) == (op == "IN")
    if op == "LIKE":
        return _like(expected, str(actual), False)
    if op == "ILIKE":
        return _like(expected, str(actual), True)
    if isinstance(expected, float):
        try:
            actual = float(actual)
        except (TypeError, ValueError):
            return False
        if math.isnan(actual):
            return op == "!="
    else:
        actual = str(actual)
    return {"=": actual == expected, "!=": actual != expected, "<": actual < expected, "<=": actual <= expected,
            ">": actual > expected, ">=": actual >= expected}[op]


def matches(clauses: list[tuple[str, str, str, Any]], get_value: Callable[[str, str], Any]) -> bool:
    """Whether a record holds every clause; ``get_value(kind, key)`` reads the record (None: absent)."""
    return all(_holds(op, get_value(kind, key), value) for kind, key, op, value in clauses)


def sort_rows(items: list[Any], keys: list[tuple[Callable[[Any], Any], bool]]) -> list[Any]:
    """Stable multi-key sort; missing values (None) sort last whichever the direction."""
    for key, ascending in reversed(keys):
        present = [x for x in items if key(x) is not None]
        missing = [x for x in items if key(x) is None]
        present.sort(key=key, reverse=not ascending)
        items = present + missing
    return items


def order_item(text: str) -> tuple[str, str, bool]:
    """``"metrics.auc DESC"`` -> ("metric", "auc", False); a bare column is an attribute."""
    parts = text.strip().rsplit(None, 1)
    ascending = True
    if len(parts) == 2 and parts[1].upper() in ("ASC", "DESC"):
        ascending = parts[1].upper() == "ASC"
        text = parts[0]
    column = text.strip()
    prefix, dot, key = column.partition(".")
    if dot and prefix.lower() in _KINDS:
        return _KINDS[prefix.lower()], key.strip("`\"'"), ascending
    return "attribute", column.strip("`\"'"), ascending


# ---- the registry's searches ---------------------------------------------------------------------
def matches_registry(clauses: list[tuple[str, str, str, Any]], get_value: Callable[[str, str], Any]) -> bool:
    """As MLflow's registry filters: a tag that is absent satisfies ``!=`` and ``NOT IN``.

    (MLflow 3's client appends ``tag.`mlflow.prompt.is_prompt` != 'true'`` to every model search.)
    """
    for clause in clauses:
        kind, key, op, _ = clause
        if kind == "tag" and op in ("!=", "NOT IN") and get_value(kind, key) is None:
            continue
        if not matches([clause], get_value):
            return False
    return True


def order_rows(items: list[dict[str, Any]], order_by: list[str], allowed: set[str],
           default: list[tuple[str, bool]]) -> list[dict[str, Any]]:
    """Sort answer rows by ``["name ASC", "last_updated_timestamp DESC"]``, then ``default``."""
    keys: list[tuple[str, bool]] = []
    for clause in order_by:
        parts = clause.strip().split()
        if not parts:
            continue
        column = parts[0].strip("`\"'")
        column = {"timestamp": "last_updated_timestamp", "version_number": "version"}.get(column, column)
        ascending = len(parts) < 2 or parts[1].upper() != "DESC"
        if column not in allowed or len(parts) > 2 or (len(parts) == 2 and parts[1].upper() not in ("ASC", "DESC")):
            raise InvalidInput(f"invalid order_by clause {clause!r}; order by {', '.join(sorted(allowed))} "
                               "with ASC or DESC")
        keys.append((column, ascending))
    for key, ascending in reversed(keys + default):
        def sort_key(row: dict[str, Any], key: str = key) -> Any:
            value = row.get(key)
            return int(value) if key == "version" else value

        present = [r for r in items if r.get(key) is not None]
        missing = [r for r in items if r.get(key) is None]  # last, whichever the direction
        items = sorted(present, key=sort_key, reverse=not ascending) + missing
    return items
