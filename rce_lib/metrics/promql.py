"""Which metrics and labels a PromQL expression names: a small lexer, not a full parser.

Enough to check that the alert rules (include/prometheus/rce-alerts.yaml) and the
dashboard (include/grafana/rce-rollout.json) name only series the exporter serves
(`rce_lib.metrics.catalog`) or recording rules, and only labels those series have.

    >>> sorted(metric_names('sum by (wave) (rate(rce_phase_total{outcome="failed"}[5m]))'))
    ['rce_phase_total']

An identifier is a metric name unless it is a function or aggregation (followed by
`(`), a keyword (`by`, `offset`, `and`, `bool`, ...), a label name inside `{...}`
or inside the label list of `by`/`without`/`on`/`ignoring`/`group_left`/`group_right`.
Everything inside `[...]` (ranges, subqueries) and every string is skipped, and so are
Grafana's template variables (`$wave`, `${DS}`, `$__rate_interval`), which may stand
anywhere. An identifier followed by `(` that is no PromQL function is an error: a
misspelt function, or a metric name used as one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final

from rce_lib.metrics.catalog import METRICS, MetricSpec

#: Labels Prometheus attaches to every scraped series.
TARGET_LABELS: Final = frozenset({"job", "instance"})

AGGREGATIONS: Final = frozenset(
    {
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
    }
)
FUNCTIONS: Final = frozenset(
    {
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
        "end",
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
        "start",
        "stddev_over_time",
        "stdvar_over_time",
        "sum_over_time",
        "tan",
        "tanh",
        "time",
        "timestamp",
        "vector",
        "year",
    }
)
#: Clauses whose parenthesised list holds label names.
GROUPING: Final = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS: Final = frozenset({"bool", "offset", "and", "or", "unless", "atan2", "inf", "nan"}) | GROUPING

_TOKEN: Final = re.compile(
    r"""
    (?P<space>\s+)
    |(?P<comment>\#[^\n]*)
    |(?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
    |(?P<variable>\$\{[^}]*\}|\$\w+|\[\[\w+\]\])
    |(?P<number>0[xX][0-9a-fA-F]+
        |(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?:(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*)?)
    |(?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
    |(?P<op>=~|!~|!=|==|>=|<=|[-+*/%^<>=,(){}\[\]@:])
    """,
    re.VERBOSE,
)
_MATCH_OPS: Final = frozenset({"=", "!=", "=~", "!~"})


class PromQLError(ValueError):
    """The expression cannot be read (an unknown character, an unbalanced bracket,
    an unknown function, a malformed label matcher)."""


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str


@dataclass(frozen=True)
class Selector:
    """One vector selector: `metric{matchers}` (metric None for `{__name__!~"..."}` forms)."""

    metric: str | None
    matchers: tuple[Matcher, ...] = ()

    @property
    def labels(self) -> frozenset[str]:
        return frozenset(m.label for m in self.matchers if m.label != "__name__")


@dataclass(frozen=True)
class Query:
    """What one expression names."""

    selectors: tuple[Selector, ...] = ()
    grouping: tuple[str, ...] = ()
    """Label names in by/without/on/ignoring/group_left/group_right lists."""
    functions: tuple[str, ...] = field(default=())

    @property
    def metrics(self) -> frozenset[str]:
        return frozenset(s.metric for s in self.selectors if s.metric is not None)


def _tokens(expr: str) -> Iterator[tuple[str, str]]:
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise PromQLError(f"unexpected character {expr[pos]!r} at {pos} in {expr!r}")
        pos = match.end()
        kind = match.lastgroup or ""
        if kind not in ("space", "comment", "variable"):
            yield kind, match.group()


def parse(expr: str) -> Query:
    """The selectors, grouping labels and functions of `expr` (raises PromQLError)."""
    tokens = list(_tokens(expr))
    selectors: list[Selector] = []
    grouping: list[str] = []
    functions: list[str] = []
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if text == "[":
            i = _skip_range(tokens, i)
        elif text == "{":
            matchers, i = _matchers(tokens, i + 1)
            names = [m.value for m in matchers if m.label == "__name__" and m.op == "="]
            selectors.append(Selector(names[0] if names else None, tuple(matchers)))
        elif kind != "ident":
            i += 1
        elif text.lower() in GROUPING and following == "(":
            labels, i = _label_list(tokens, i + 2)
            grouping.extend(labels)
        elif text.lower() in KEYWORDS:
            i += 1
        elif text.lower() in AGGREGATIONS or following == "(":
            if text.lower() not in AGGREGATIONS and text not in FUNCTIONS:
                raise PromQLError(f"unknown function {text}() in {expr!r}")
            functions.append(text)
            i += 1
        elif following == "{":
            matchers, i = _matchers(tokens, i + 2)
            selectors.append(Selector(text, tuple(matchers)))
        else:
            selectors.append(Selector(text))
            i += 1
    return Query(tuple(selectors), tuple(grouping), tuple(functions))


def _skip_range(tokens: list[tuple[str, str]], i: int) -> int:
    for j in range(i + 1, len(tokens)):
        if tokens[j][1] == "]":
            return j + 1
    raise PromQLError("unclosed [")


def _label_list(tokens: list[tuple[str, str]], i: int) -> tuple[list[str], int]:
    """Label names up to the closing `)`; returns them and the index after it."""
    labels: list[str] = []
    while i < len(tokens):
        kind, text = tokens[i]
        if text == ")":
            return labels, i + 1
        if kind == "ident":
            labels.append(text)
        elif text != ",":
            raise PromQLError(f"{text!r} in a label list")
        i += 1
    raise PromQLError("unclosed label list")


def _matchers(tokens: list[tuple[str, str]], i: int) -> tuple[list[Matcher], int]:
    """`label op "value"` pairs up to the closing `}`; returns them and the index after it."""
    found: list[Matcher] = []
    while i < len(tokens):
        kind, text = tokens[i]
        if text == "}":
            return found, i + 1
        if text == ",":
            i += 1
            continue
        if kind not in ("ident", "string") or i + 2 >= len(tokens):
            raise PromQLError(f"{text!r} where a label matcher should be")
        op, value = tokens[i + 1][1], tokens[i + 2]
        if op not in _MATCH_OPS or value[0] != "string":
            raise PromQLError(f"malformed label matcher at {text!r}")
        found.append(Matcher(text.strip("\"'`"), op, value[1][1:-1]))
        i += 3
    raise PromQLError("unclosed {")


def metric_names(expr: str) -> frozenset[str]:
    """Every metric name `expr` selects."""
    return parse(expr).metrics


def series_labels(specs: Iterable[MetricSpec] = METRICS) -> dict[str, frozenset[str]]:
    """Series name -> its label names, as PromQL sees them (`le` on histogram buckets)."""
    out: dict[str, frozenset[str]] = {}
    for spec in specs:
        for name in spec.series_names:
            extra = ("le",) if name.endswith("_bucket") and spec.type == "histogram" else ()
            out[name] = frozenset((*spec.labels, *extra))
    return out


def recorded_labels(
    expr: str, known: Mapping[str, frozenset[str]], static: Iterable[str] = ()
) -> frozenset[str]:
    """The labels a recording rule's series may carry: those of the series it reads (an
    over-approximation: aggregations drop some) plus the rule's own `labels:`."""
    found: set[str] = set(static)
    for metric in metric_names(expr):
        found |= known.get(metric, frozenset())
    return frozenset(found)


def problems(
    expr: str,
    known: Mapping[str, frozenset[str]],
    values: Mapping[str, frozenset[str]] | None = None,
) -> list[str]:
    """What is wrong with `expr` against `known` (series name -> label names): unknown
    metrics, matchers on labels the metric does not have, grouping labels no metric of
    the expression has, and, given `values` (label name -> the values it can take), an
    `=`/`!=` matcher on a value the label never takes (template variables aside). Empty
    when nothing is."""
    try:
        query = parse(expr)
    except PromQLError as err:
        return [str(err)]
    found = []
    for selector in query.selectors:
        if selector.metric is None:
            found.append(f"a selector without a metric name: {selector}")
        elif selector.metric not in known:
            found.append(f"unknown metric {selector.metric}")
        else:
            for label in sorted(selector.labels - known[selector.metric] - TARGET_LABELS):
                found.append(f"{selector.metric} has no label {label}")
        for matcher in selector.matchers:
            allowed = (values or {}).get(matcher.label)
            exact = matcher.op in ("=", "!=") and "$" not in matcher.value
            if allowed is not None and exact and matcher.value not in allowed:
                found.append(f"{matcher.label}{matcher.op}{matcher.value!r}: {matcher.label} never takes it")
    label_sets = [known[m] for m in query.metrics if m in known]
    if label_sets:
        available = frozenset().union(*label_sets) | TARGET_LABELS
        for label in query.grouping:
            if label not in available:
                found.append(f"no metric of the expression has the label {label} (by/on/...)")
    return found
