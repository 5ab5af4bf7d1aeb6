"""Confine a tenant's PromQL to its own namespace before it reaches the operator's shared Prometheus.

The operator's ``--prometheus-url`` serves every namespace, so a policy's query must read only
series of the policy's own namespace (design invariant 8: every namespace is a stranger). The
rule is prom-label-proxy's: every vector and matrix selector of the query gets the matcher
``<label>="<namespace>"``; a selector that already matches that label must match it with exactly
that (``=`` and the namespace itself); any other use of the label (``!=``, ``=~``, ``!~``, another
namespace, a quoted label name) is refused, never guessed at. The same manifest therefore works
unchanged in every namespace, and what a query sees is what its namespace owns.

The parser is deliberately small and conservative: it knows PromQL's tokens, selectors, function
calls, aggregations with ``by``/``without``, binary operators with ``bool``/``on``/``ignoring``/
``group_left``/``group_right``, ranges, subqueries, ``offset`` and ``@``; anything it does not
understand (an unknown function, a keyword where an operand belongs, a character outside strings
that is not PromQL's, a quoted label name, a metric name starting with ``:``, nesting deeper than
``MAX_DEPTH``) is refused, so nothing it cannot account for is ever sent. The query sent is
rebuilt from the tokens it understood (comments dropped).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["MAX_DEPTH", "QueryNotScoped", "same_server", "scope_query"]

MAX_DEPTH = 64  # nested parentheses, calls and aggregations
_SHOWN = 120  # characters of a selector quoted back in a refusal

# Prometheus 3 functions that take values and return values; ``info`` (experimental, which joins
# other series by their labels) is deliberately absent and therefore refused.
FUNCTIONS = frozenset(
    [
        "abs",
        "absent",
        "absent_over_time",
        "acos",
        "acosh",
        "asin",
        "asinh",
        "atan",
        "atanh",
        "avg_over_time",
        "ceil",
        "changes",
        "clamp",
        "clamp_max",
        "clamp_min",
        "cos",
        "cosh",
        "count_over_time",
        "day_of_month",
        "day_of_week",
        "day_of_year",
        "days_in_month",
        "deg",
        "delta",
        "deriv",
        "double_exponential_smoothing",
        "exp",
        "floor",
        "histogram_avg",
        "histogram_count",
        "histogram_fraction",
        "histogram_quantile",
        "histogram_stddev",
        "histogram_stdvar",
        "histogram_sum",
        "holt_winters",
        "hour",
        "idelta",
        "increase",
        "irate",
        "label_join",
        "label_replace",
        "last_over_time",
        "ln",
        "log10",
        "log2",
        "mad_over_time",
        "max_over_time",
        "min_over_time",
        "minute",
        "month",
        "pi",
        "predict_linear",
        "present_over_time",
        "quantile_over_time",
        "rad",
        "rate",
        "resets",
        "round",
        "scalar",
        "sgn",
        "sin",
        "sinh",
        "sort",
        "sort_by_label",
        "sort_by_label_desc",
        "sort_desc",
        "sqrt",
        "stddev_over_time",
        "stdvar_over_time",
        "sum_over_time",
        "tan",
        "tanh",
        "time",
        "timestamp",
        "vector",
        "year",
    ]
)
AGGREGATIONS = frozenset(
    [
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ]
)
_SET_OPERATORS = frozenset({"and", "or", "unless"})
_KEYWORDS = (
    frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "atan2"})
    | _SET_OPERATORS
    | AGGREGATIONS
)
_BINARY = frozenset({"+", "-", "*", "/", "%", "^", "==", "!=", "<=", ">=", "<", ">"})
_COMPARISONS = frozenset({"==", "!=", "<=", ">=", "<", ">"})
_MATCH_OPS = frozenset({"=", "!=", "=~", "!~"})

_TOKEN = re.compile(
    r"""
    (?P<space>[ \t\r\n]+)
  | (?P<comment>\#[^\n]*)
  | (?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`]*`)
  | (?P<dur>(?:[0-9]+(?:ms|[smhdwy]))+)(?![A-Za-z0-9_.])
  | (?P<num>(?:0[xX][0-9a-fA-F]+|[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?))(?![A-Za-z0-9_.])
  | (?P<ident>[A-Za-z_][A-Za-z0-9_:]*)
  | (?P<op>==|!=|<=|>=|=~|!~|[-+*/%^<>=(){}\[\],:@])
    """,
    re.VERBOSE,
)


class QueryNotScoped(ValueError):
    """The query cannot be confined to the namespace; ``str()`` says why, for the policy's status."""


@dataclass(frozen=True)
class _Token:
    kind: str  # str, dur, num, ident, op
    text: str
    at: int


def scope_query(query: str, namespace: str, label: str = "namespace") -> str:
    """``query`` with ``label="namespace"`` in every selector, or ``QueryNotScoped`` saying why not.

    ``namespace`` must be a plain name (a Kubernetes namespace is a DNS label), ``label`` a
    Prometheus label name.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", namespace) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", label):
        raise ValueError("namespace and label must be plain names")
    parser = _Parser(_tokens(query), namespace, label)
    parser.expression()
    if parser.peek() is not None:
        raise QueryNotScoped(f"unexpected {parser.describe()}")
    return " ".join(parser.out)


def same_server(url: str, other: str | None) -> bool:
    """Whether two Prometheus URLs name the same host and port (paths and spelling of case aside)."""
    if not other:
        return False

    def where(u: str) -> tuple[str, int | None]:
        parts = urlsplit(u)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
        return (parts.hostname or "").rstrip(".").lower(), port

    try:
        return where(url) == where(other)
    except ValueError:  # a port out of range: not comparable, so treat it as the shared one
        return True


def _tokens(query: str) -> list[_Token]:
    tokens: list[_Token] = []
    at = 0
    while at < len(query):
        match = _TOKEN.match(query, at)
        if match is None:
            raise QueryNotScoped(f"character {query[at]!r} at position {at} is not PromQL this operator understands")
        kind = match.lastgroup
        assert kind is not None
        if kind not in ("space", "comment"):
            tokens.append(_Token(kind, match.group(), at))
        at = match.end()
    return tokens


class _Parser:
    """Recursive descent over the tokens, emitting the scoped query into ``out``."""

    def __init__(self, tokens: list[_Token], namespace: str, label: str) -> None:
        self.tokens = tokens
        self.i = 0
        self.depth = 0
        self.namespace = namespace
        self.label = label
        self.out: list[str] = []

    # -- tokens ------------------------------------------------------------------------------------

    def peek(self, ahead: int = 0) -> _Token | None:
        j = self.i + ahead
        return self.tokens[j] if j < len(self.tokens) else None

    def at(self, *texts: str, kind: str | None = None, ahead: int = 0) -> bool:
        token = self.peek(ahead)
        if token is None or (kind is not None and token.kind != kind):
            return False
        text = token.text.lower() if token.kind == "ident" else token.text
        return not texts or text in texts

    def take(self) -> _Token:
        token = self.peek()
        if token is None:
            raise QueryNotScoped("the query ends too early")
        self.i += 1
        self.out.append(token.text)
        return token

    def expect(self, text: str) -> None:
        if not self.at(text):
            raise QueryNotScoped(f"expected {text!r}, found {self.describe()}")
        self.take()

    def describe(self) -> str:
        token = self.peek()
        return "the end of the query" if token is None else f"{token.text[:_SHOWN]!r} at position {token.at}"

    # -- grammar -----------------------------------------------------------------------------------

    def expression(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise QueryNotScoped(f"the query nests deeper than {MAX_DEPTH} levels")
        self.unary()
        while self.at(*_BINARY, kind="op") or self.at(*_SET_OPERATORS, "atan2", kind="ident"):
            comparison = self.at(*_COMPARISONS, kind="op")
            self.take()
            if comparison and self.at("bool", kind="ident"):
                self.take()
            if self.at("on", "ignoring", kind="ident"):
                self.take()
                self.labels()
                if self.at("group_left", "group_right", kind="ident"):
                    self.take()
                    if self.at("("):
                        self.labels()
            self.unary()
        self.depth -= 1

    def unary(self) -> None:
        while self.at("+", "-", kind="op"):
            self.take()
        self.primary()
        self.postfix()

    def postfix(self) -> None:
        while True:
            if self.at("[", kind="op"):
                self.take()
                self.duration()
                if self.at(":", kind="op"):
                    self.take()
                    if not self.at("]"):
                        self.duration()
                self.expect("]")
            elif self.at("offset", kind="ident"):
                self.take()
                if self.at("+", "-", kind="op"):
                    self.take()
                self.duration()
            elif self.at("@", kind="op"):
                self.take()
                if self.at("start", "end", kind="ident") and self.at("(", ahead=1) and self.at(")", ahead=2):
                    for _ in range(3):
                        self.take()
                    continue
                if self.at("+", "-", kind="op"):
                    self.take()
                if not self.at(kind="num"):
                    raise QueryNotScoped(f"expected a timestamp after @, found {self.describe()}")
                self.take()
            else:
                return

    def duration(self) -> None:
        if not (self.at(kind="dur") or self.at(kind="num")):
            raise QueryNotScoped(f"expected a duration, found {self.describe()}")
        self.take()

    def primary(self) -> None:
        token = self.peek()
        if token is None:
            raise QueryNotScoped("the query ends where a value was expected")
        if token.kind in ("num", "str"):
            self.take()
        elif token.text == "(":
            self.take()
            self.expression()
            self.expect(")")
        elif token.text == "{":
            self.selector(None)
        elif token.kind == "ident":
            self.identifier(token)
        else:
            raise QueryNotScoped(f"unexpected {self.describe()}")

    def identifier(self, token: _Token) -> None:
        word = token.text.lower()
        if word in AGGREGATIONS:
            self.take()
            if self.at("by", "without", kind="ident"):
                self.take()
                self.labels()
            self.arguments()
            if self.at("by", "without", kind="ident"):
                self.take()
                self.labels()
        elif word in ("inf", "nan"):
            self.take()
        elif self.at("(", ahead=1):
            if token.text not in FUNCTIONS:
                raise QueryNotScoped(f"unknown or unsupported function {token.text[:_SHOWN]!r}")
            self.take()
            self.arguments()
        elif word in _KEYWORDS:
            raise QueryNotScoped(f"keyword {token.text!r} at position {token.at} where a value was expected")
        else:
            self.i += 1
            self.selector(token.text)

    def arguments(self) -> None:
        self.depth += 1
        self.expect("(")
        while not self.at(")"):
            self.expression()
            if not self.at(")"):
                self.expect(",")
        self.take()
        self.depth -= 1

    def labels(self) -> None:
        """A grouping list, ``(a, b)``: label names only, which select no series."""
        self.expect("(")
        while not self.at(")"):
            if not (self.at(kind="ident") or self.at(kind="str")):
                raise QueryNotScoped(f"expected a label name, found {self.describe()}")
            self.take()
            if not self.at(")"):
                self.expect(",")
        self.take()

    def selector(self, name: str | None) -> None:
        """A metric name and/or ``{matchers}`` (the name already consumed), emitted scoped."""
        matchers: list[str] = []
        scoped = False
        if self.at("{", kind="op"):
            self.i += 1
            while not self.at("}"):
                label, op, value = self.peek(), self.peek(1), self.peek(2)
                if label is None or label.kind != "ident":
                    raise QueryNotScoped(f"expected a label name in a selector, found {self.describe()}")
                if op is None or op.text not in _MATCH_OPS or value is None or value.kind != "str":
                    raise QueryNotScoped(f"expected a label matcher after {label.text!r} at position {label.at}")
                self.i += 3
                matchers.append(f"{label.text}{op.text}{value.text}")
                if label.text == self.label:
                    if op.text != "=" or value.text[1:-1] != self.namespace:
                        shown = _show(name, matchers)
                        raise QueryNotScoped(
                            f"selector {shown} matches {self.label} with {op.text}{value.text}: only "
                            f'{self.label}="{self.namespace}" (this policy\'s namespace) is allowed'
                        )
                    scoped = True
                if not self.at("}"):
                    if not self.at(","):
                        raise QueryNotScoped(f"expected ',' or '}}' in a selector, found {self.describe()}")
                    self.i += 1
            self.i += 1
        if not scoped:
            matchers.append(f'{self.label}="{self.namespace}"')
        self.out.append((name or "") + "{" + ",".join(matchers) + "}")


def _show(name: str | None, matchers: list[str]) -> str:
    text = (name or "") + "{" + ",".join(matchers) + "}"
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."
