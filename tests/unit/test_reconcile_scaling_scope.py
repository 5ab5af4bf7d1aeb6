"""Tenant scoping of PromQL sent to the operator's shared Prometheus, as tables of ordinary and hostile
queries: every selector gets namespace="<own>", any other use of the label is refused, and anything
the parser does not understand is refused rather than passed."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skyfleet.reconcile.scaling_scope import MAX_DEPTH, QueryNotScoped, _tokens, same_server, scope_query

pytestmark = pytest.mark.unit

OWN = 'namespace="a"'

REWRITTEN = [
    # (query, what is sent: tokens joined by one space, each selector written as one)
    ("up", f"up{{{OWN}}}"),
    ("sum(web_load)", f"sum ( web_load{{{OWN}}} )"),
    (
        "sum(rate(http_requests_total[1m]))",
        f"sum ( rate ( http_requests_total{{{OWN}}} [ 1m ] ) )",
    ),
    # the own namespace, written out, is kept (once, or twice as written) and not added again
    (f"x{{{OWN}}}", f"x{{{OWN}}}"),
    ("x{namespace='a'}", "x{namespace='a'}"),
    ("x{namespace=`a`}", "x{namespace=`a`}"),
    (f"x{{{OWN},{OWN}}}", f"x{{{OWN},{OWN}}}"),
    (f'x{{job="j",{OWN},}}', f'x{{job="j",{OWN}}}'),
    # label names in grouping lists are not selectors and stay as they are
    ("sum by (namespace) (x)", f"sum by ( namespace ) ( x{{{OWN}}} )"),
    ("sum(x) without (namespace, pod)", f"sum ( x{{{OWN}}} ) without ( namespace , pod )"),
    ("SUM BY (le) (x)", f"SUM BY ( le ) ( x{{{OWN}}} )"),
    ("a * on(namespace) group_left(pod) b", f"a{{{OWN}}} * on ( namespace ) group_left ( pod ) b{{{OWN}}}"),
    ("a / ignoring(pod) group_right b", f"a{{{OWN}}} / ignoring ( pod ) group_right b{{{OWN}}}"),
    ("a > bool on() b", f"a{{{OWN}}} > bool on ( ) b{{{OWN}}}"),
    ("a and on(x) b or c unless d", f"a{{{OWN}}} and on ( x ) b{{{OWN}}} or c{{{OWN}}} unless d{{{OWN}}}"),
    ("a atan2 b", f"a{{{OWN}}} atan2 b{{{OWN}}}"),
    # strings with braces, quotes and selector-looking text are strings, not selectors
    ('x{a="}{\\"namespace\\"=b"}', f'x{{a="}}{{\\"namespace\\"=b",{OWN}}}'),
    ("x{a='namespace=\"b\"'}", f"x{{a='namespace=\"b\"',{OWN}}}"),
    ('label_replace(x, "namespace", "b", "", "")', f'label_replace ( x{{{OWN}}} , "namespace" , "b" , "" , "" )'),
    ('count_values("namespace", x)', f'count_values ( "namespace" , x{{{OWN}}} )'),
    # __name__ matchers select series like a name does
    ('{__name__=~".+"}', f'{{__name__=~".+",{OWN}}}'),
    ('{__name__="up", job="j"}', f'{{__name__="up",job="j",{OWN}}}'),
    ("{}", f"{{{OWN}}}"),
    # ranges, subqueries, offset and @ keep their place
    ("rate(x[5m:1m] offset 5m @ end())", f"rate ( x{{{OWN}}} [ 5m : 1m ] offset 5m @ end ( ) )"),
    ("max_over_time(rate(x[1m])[10m:])", f"max_over_time ( rate ( x{{{OWN}}} [ 1m ] ) [ 10m : ] )"),
    ("x offset -1h30m @ 1700000000", f"x{{{OWN}}} offset - 1h30m @ 1700000000"),
    ("x @ start()", f"x{{{OWN}}} @ start ( )"),
    # a comment goes, including a selector written in it
    ('count(up) # {namespace="b"}', f"count ( up{{{OWN}}} )"),
    ("up # ) or vector(1", f"up{{{OWN}}}"),
    # unicode inside strings is fine
    ('x{path="/héllo}"}', f'x{{path="/héllo}}",{OWN}}}'),
    # both sides of every binary operator, and unary signs
    ("-a + -(b - c) ^ 2 % d", f"- a{{{OWN}}} + - ( b{{{OWN}}} - c{{{OWN}}} ) ^ 2 % d{{{OWN}}}"),
    ("x or on() vector(0)", f"x{{{OWN}}} or on ( ) vector ( 0 )"),
    (
        "histogram_quantile(0.9, sum by (le) (rate(h_bucket[5m])))",
        f"histogram_quantile ( 0.9 , sum by ( le ) ( rate ( h_bucket{{{OWN}}} [ 5m ] ) ) )",
    ),
    ("topk(1, x) > Inf", f"topk ( 1 , x{{{OWN}}} ) > Inf"),
    ("job:rate5m:sum", f"job:rate5m:sum{{{OWN}}}"),
    ("end", f"end{{{OWN}}}"),
    ("scalar(x) * 0x1F + 1e3 - .5", f"scalar ( x{{{OWN}}} ) * 0x1F + 1e3 - .5"),
    ("vector(1)", "vector ( 1 )"),
]


@pytest.mark.parametrize(("query", "sent"), REWRITTEN)
def test_every_selector_is_confined_to_the_policys_namespace(query: str, sent: str) -> None:
    scoped = scope_query(query, "a")
    assert scoped == sent
    assert_confined(scoped)


REFUSED = [
    # (query, words the refusal must contain)
    ('sum(rate(http_requests_total{namespace="b"}[1m]))', 'http_requests_total{namespace="b"}'),
    ('x{namespace=~".*"}', 'x{namespace=~".*"}'),
    ('x{namespace=~"a"}', "=~"),
    ('x{namespace!="b"}', "!="),
    ('x{namespace!~"a"}', "!~"),
    ('x{namespace="a",namespace="b"}', 'namespace="b"'),
    ('x{namespace="b",namespace="a"}', 'namespace="b"'),
    ('{__name__="up",namespace="b"}', '{__name__="up",namespace="b"}'),
    ('x{namespace=""}', 'namespace=""'),
    ('x{namespace="a "}', 'namespace="a "'),
    ('x{namespace="A"}', 'namespace="A"'),
    ('x{namespace="\\x61"}', "namespace="),  # an escape that spells "a" is still not the plain name
    ('x + y{namespace="b"}', 'y{namespace="b"}'),  # the right-hand side of a binary operator
    ('x{namespace="a"} / on(namespace) y{namespace="b"}', 'y{namespace="b"}'),
    ('rate(x{namespace="b"}[5m:1m] offset 1h)', 'x{namespace="b"}'),
    # quoted label and metric names (UTF-8 names) are not understood
    ('x{"namespace"="b"}', "label name"),
    ('{"my.metric"}', "label name"),
    # keywords where a value belongs, and modifiers out of place
    ("sum(by)", "by"),
    ("a + on(x)", "ends"),
    ("a + bool b", "bool"),
    ("group_left(x) a", "group_left"),
    ("offset", "offset"),
    ("a and", "ends"),
    # unknown functions (info joins series by labels) and non-PromQL
    ("info(x)", "info"),
    ("mystery(x)", "mystery"),
    ("x; up", "';'"),
    ("x\u00a0+ y", "position"),
    ("ünïcode", "position"),
    ('x{namespaçe="b"}', "position"),
    (":x", "':'"),
    ('x{a="unterminated}', "position"),
    ("x{a=b}", "label matcher"),
    ("x{a}", "label matcher"),
    ('x{a="1" b="2"}', "','"),
    ("(x", "')'"),
    ("x)", "')'"),
    ("x[5m", "']'"),
    ("x[foo]", "duration"),
    ("x offset y", "duration"),
    ("x @ y", "timestamp"),
    ("sum by (rate(x)) (y)", "','"),
    ("sum by (a) y", "'('"),
    ("x y", "'y'"),
    ("", "value"),
]


@pytest.mark.parametrize(("query", "why"), REFUSED)
def test_anything_else_is_refused_saying_why(query: str, why: str) -> None:
    with pytest.raises(QueryNotScoped) as refused:
        scope_query(query, "a")
    assert why in str(refused.value)


def test_deep_nesting_is_refused_not_a_crash() -> None:
    assert scope_query("(" * (MAX_DEPTH - 1) + "x" + ")" * (MAX_DEPTH - 1), "a").count(OWN) == 1
    for deep in ("(" * 2000 + "x" + ")" * 2000, "sum(" * 2000 + "x" + ")" * 2000, "rate(" * 100 + "x" + ")" * 100):
        with pytest.raises(QueryNotScoped, match="deeper than"):
            scope_query(deep, "a")
    assert scope_query("-" * 4000 + "x", "a").endswith(f"- x{{{OWN}}}")  # signs repeat, they do not nest


def test_the_label_comes_from_the_setting() -> None:
    assert scope_query('sum(x{namespace="b"})', "a", label="tenant") == 'sum ( x{namespace="b",tenant="a"} )'
    with pytest.raises(QueryNotScoped, match=re.escape('tenant=~".*"')):
        scope_query('x{tenant=~".*"}', "a", label="tenant")


def test_a_refusal_quotes_a_bounded_selector() -> None:
    with pytest.raises(QueryNotScoped) as refused:
        scope_query("x{" + ",".join(f'l{i}="{"v" * 50}"' for i in range(50)) + ',namespace="b"}', "a")
    assert len(str(refused.value)) < 300


HOSTILE = st.sampled_from(
    [
        "x",
        "up",
        "{",
        "}",
        "(",
        ")",
        "[",
        "]",
        ",",
        "namespace",
        "=",
        "!=",
        "=~",
        "!~",
        '"a"',
        '"b"',
        "'b'",
        "`b`",
        '"}{"',
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "@",
        "5m",
        ":",
        "1",
        "+",
        "-",
        "*",
        "/",
        "and",
        "or",
        "unless",
        "sum",
        "rate",
        "#",
        "\n",
        " ",
        "__name__",
        "end",
        "start",
        "\\",
        '"',
        "'",
        "é",
        "inf",
    ]
)


@settings(max_examples=3000, deadline=None)
@given(st.lists(HOSTILE, max_size=24))
def test_token_soup_is_refused_or_confined(parts: list[str]) -> None:
    query = "".join(parts)
    try:
        scoped = scope_query(query, "a")
    except QueryNotScoped:
        return
    assert_confined(scoped)


def assert_confined(scoped: str) -> None:
    """Every {...} of what is sent matches namespace "a" and nothing else of it; scoping it again
    changes nothing (a fixed point: nothing is left to confine)."""
    tokens = [t.text for t in _tokens(scoped)]
    for start in (i for i, t in enumerate(tokens) if t == "{"):
        end = tokens.index("}", start)
        triples = [tokens[i : i + 3] for i in range(start + 1, end, 4)]
        assert (
            ["namespace", "=", '"a"'] in triples
            or ["namespace", "=", "'a'"] in triples
            or ["namespace", "=", "`a`"] in triples
        ), scoped
        assert all(t[2][1:-1] == "a" for t in triples if t[0] == "namespace"), scoped
    assert scope_query(scoped, "a") == scoped


@pytest.mark.parametrize(
    ("url", "default", "same"),
    [
        ("http://prometheus.monitoring:9090", "http://prometheus.monitoring:9090", True),
        ("http://PROMETHEUS.monitoring.:9090/sub/path", "http://prometheus.monitoring:9090/", True),
        ("https://prom.example", "https://prom.example:443/x", True),
        ("http://prom.example", "http://prom.example:80", True),
        ("http://prom.example:9091", "http://prom.example:9090", False),
        ("https://tenant-prom.example", "https://prom.example", False),
        ("https://prom.example", None, False),
        ("http://[::1]:9090", "http://[::1]:9090/", True),
    ],
)
def test_which_urls_are_the_shared_prometheus(url: str, default: str | None, same: bool) -> None:
    assert same_server(url, default) is same
