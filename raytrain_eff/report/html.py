"""The report as one self-contained HTML page: every section, PNGs inline as base64.

Every number on the page is a cell of one of the Parquet tables written beside it, and is
rendered from that very frame: each sits in ``<span class="num" data-table=T data-row=R
data-col=C>``, so a reader (or a test) can trace any figure back to ``tables/T.parquet``.
Strings from the tables (labels, config values) carry the same attributes; the prose itself
contains no digits.
"""

from __future__ import annotations

import base64
import html
import math

import numpy as np
import pandas as pd

SECTIONS = [
    ("verdict", "Verdict"),
    ("setup", "Setup and fairness"),
    ("curves", "Quality against steps, wall time and effective FLOPs"),
    ("target", "Time and FLOPs to the target"),
    ("memory", "Peak memory per worker"),
    ("throughput", "Throughput"),
    ("cost", "Cost estimate"),
    ("runs", "Every run"),
]
SECTION_ROWS = {
    "target": ["time_to_target_s", "flops_to_target", "steps_to_target"],
    "memory": ["peak_memory_mib"],
    "throughput": ["samples_per_s"],
    "cost": ["cost", "wall_s"],
}
STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0 auto;
max-width:1180px;padding:24px 32px;color:#1d232a;line-height:1.45}
h1{font-size:26px;margin-bottom:4px}h2{font-size:20px;border-bottom:2px solid #e3e7ec;
padding-bottom:4px;margin-top:36px}
table{border-collapse:collapse;margin:10px 0;font-size:13px}
th,td{border:1px solid #d7dde3;padding:4px 8px;text-align:right}
th{background:#f3f5f8}td.t,th.t{text-align:left}
.verdict li{margin:6px 0}.call{font-weight:600}.beyond{color:#1a7f37}.noise{color:#8a6d00}
.na{color:#888}figure{display:inline-block;margin:8px 12px 8px 0}
figure img{max-width:100%;border:1px solid #e3e7ec}figcaption{font-size:12px;color:#555}
.note{color:#555;font-size:14px}.headline{font-size:16px;background:#f6f8fa;padding:12px 16px;
border-left:4px solid #1f77b4}.wide{overflow-x:auto}.wide td{white-space:nowrap}
.sources{font-size:12px;word-break:break-all}
"""


def fmt(value) -> str:
    """A table value as shown: four significant digits; never-reached and missing as words."""
    if isinstance(value, (bool,)):
        return "yes" if value else "no"
    if isinstance(value, int) or (hasattr(value, "dtype") and value.dtype.kind in "iu"):
        return str(int(value))
    value = float(value)
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "not reached" if value > 0 else "-inf"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3e}"
    return f"{value:.4g}"


class Page:
    """Renders cells of the report's tables with their provenance attached."""

    def __init__(self, tables: dict[str, pd.DataFrame]):
        self.tables = tables

    def cell(self, table: str, row: int, col: str) -> str:
        value = self.tables[table][col].iloc[row]
        where = f'data-table="{table}" data-row="{row}" data-col="{html.escape(col)}"'
        if isinstance(value, (bool,)) or getattr(value, "dtype", None) == np.dtype(bool):
            return f'<span class="bool" {where}>{fmt(bool(value))}</span>'
        if isinstance(value, str) or value is None:
            return f'<span class="text" {where}>{html.escape(value or "")}</span>'
        shown = fmt(value)
        css = "num na" if not math.isfinite(float(value)) else "num"
        return f'<span class="{css}" {where}>{shown}</span>'

    def table(
        self, name: str, columns: list[str] | None = None, rows: list[int] | None = None
    ) -> str:
        frame = self.tables[name]
        columns = columns or list(frame.columns)
        row_ids = range(len(frame)) if rows is None else rows
        head = "".join(f'<th class="{_align(frame[c])}">{html.escape(c)}</th>' for c in columns)
        body = "".join(
            "<tr>"
            + "".join(
                f'<td class="{_align(frame[c])}">{self.cell(name, r, c)}</td>' for c in columns
            )
            + "</tr>"
            for r in row_ids
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def rows_of(self, table: str, column: str, values: list[str]) -> list[int]:
        frame = self.tables[table]
        return [i for v in values for i in range(len(frame)) if frame[column].iloc[i] == v]


def _align(series: pd.Series) -> str:
    """Words left, numbers right."""
    textual = pd.api.types.is_string_dtype(series) or pd.api.types.is_bool_dtype(series)
    return "t" if textual or series.dtype == object else ""


def _figures(figures: dict[str, bytes]) -> str:
    return "".join(
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode()}"><figcaption>{html.escape(name)}</figcaption></figure>'
        for name, png in figures.items()
    )


def render(tables: dict[str, pd.DataFrame], figures: dict[str, dict[str, bytes]]) -> str:
    """The page; ``tables`` are the frames as written to Parquet, ``figures`` per section."""
    page = Page(tables)
    c = lambda col: page.cell("settings", 0, col)  # noqa: E731 - short alias for the header
    parts = [
        f"<h1>{c('label_a')} against {c('label_b')}</h1>",
        f'<ul class="note sources"><li>A ({c("label_a")}): {c("source_a")}</li>'
        f"<li>B ({c('label_b')}): {c('source_b')}</li></ul>",
    ]
    body = {
        "verdict": _verdict(page),
        "setup": _setup(page),
        "curves": _curves(page),
        "runs": _runs(page),
    }
    for key, title in SECTIONS:
        inner = body.get(key) or _quantity_section(page, key)
        parts.append(
            f'<section id="{key}"><h2>{title}</h2>{inner}{_figures(figures.get(key, {}))}</section>'
        )
    parts.append(
        '<p class="note">Tables: '
        + ", ".join(f"<code>tables/{html.escape(n)}.parquet</code>" for n in tables)
        + "</p>"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>raytrain-eff comparison"
        f"</title><style>{STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )


def _verdict(page: Page) -> str:
    comp = page.tables["comparison"]
    c = lambda r, col: page.cell("comparison", r, col)  # noqa: E731
    items = []
    for r in range(len(comp)):
        row = comp.iloc[r]
        css = {"beyond seed spread": "beyond", "within seed noise": "noise"}.get(row.call, "na")
        winner = f"{c(r, 'winner')} is better, " if row.winner else ""
        items.append(
            f"<li><b>{c(r, 'quantity')}</b> ({c(r, 'better')} is better; {c(r, 'unit')}): "
            f"{page.cell('settings', 0, 'label_a')} {c(r, 'median_a')} "
            f"[{c(r, 'min_a')} – {c(r, 'max_a')}] against "
            f"{page.cell('settings', 0, 'label_b')} {c(r, 'median_b')} "
            f"[{c(r, 'min_b')} – {c(r, 'max_b')}], ratio A/B {c(r, 'ratio_a_over_b')}: "
            f'{winner}<span class="call {css}">{c(r, "call")}</span>.</li>'
        )
    return (
        f'<p class="headline">{_headline(page)}</p>'
        '<p class="note">Medians over seeds, with the seed range [min – max]. A difference '
        "is called only when the two seed ranges do not overlap; otherwise it is within "
        "the noise between seeds, and more seeds are needed to call it.</p>"
        f'<ul class="verdict">{"".join(items)}</ul>'
    )


def _headline(page: Page) -> str:
    comp = page.tables["comparison"]
    s = lambda col: page.cell("settings", 0, col)  # noqa: E731
    sentences = [
        f"Seeds: {page.cell('comparison', 0, 'n_a')} of {s('label_a')}, "
        f"{page.cell('comparison', 0, 'n_b')} of {s('label_b')}."
    ]
    for side in ("label_a", "label_b"):
        label = page.tables["settings"].iloc[0][side]
        won = [
            r
            for r in range(len(comp))
            if comp.iloc[r].winner == label and comp.iloc[r].call == "beyond seed spread"
        ]
        names = ", ".join(page.cell("comparison", r, "quantity") for r in won) or "nothing"
        sentences.append(f"{s(side)} is better beyond the seed spread on: {names}.")
    noise = [r for r in range(len(comp)) if comp.iloc[r].call == "within seed noise"]
    if noise:
        sentences.append(
            "Within seed noise: "
            + ", ".join(page.cell("comparison", r, "quantity") for r in noise)
            + "."
        )
    return " ".join(sentences)


def _runs(page: Page) -> str:
    metric = page.tables["settings"].metric.iloc[0]
    cols = [
        "side",
        "run",
        "seed",
        "world_size",
        "nodes",
        "steps",
        f"final_{metric}",
        "final_loss",
        "wall_s",
        "time_to_target_s",
        "effective_flops",
        "flops_to_target",
        "samples_per_s",
        "peak_memory_mib",
        "node_hours",
        "cost",
    ]
    return (
        '<p class="note">The main columns; every column is in '
        '<code>tables/runs.parquet</code>.</p><div class="wide">'
        f"{page.table('runs', cols)}</div>"
    )


def _setup(page: Page) -> str:
    s = lambda col: page.cell("settings", 0, col)  # noqa: E731
    diff = page.tables["config_diff"]
    diff_html = (
        page.table("config_diff")
        if len(diff)
        else "<p>The two sides' configs are identical apart from the seed.</p>"
    )
    return (
        f"<p>Quality metric {s('metric')} ({s('mode')}); target {s('target')} "
        f"({s('target_source')}). Price per node-hour {s('price_per_node_hour')}; "
        f"workers per node {s('workers_per_node')}.</p>{page.table('setup')}"
        f"<h3>Where the configs differ</h3>{diff_html}"
        f"<h3>Config groups found</h3>{page.table('groups')}"
    )


def _curves(page: Page) -> str:
    return (
        f"<p>Held-out {page.cell('settings', 0, 'metric')} at each evaluation; thin lines "
        "are single seeds, thick lines the median over seeds; the dashed line is the "
        "target.</p>"
    )


def _quantity_section(page: Page, key: str) -> str:
    rows = page.rows_of("comparison", "column", SECTION_ROWS[key])
    cols = [
        "quantity",
        "unit",
        "median_a",
        "min_a",
        "max_a",
        "median_b",
        "min_b",
        "max_b",
        "ratio_a_over_b",
        "winner",
        "call",
    ]
    notes = {
        "target": "<p>Target: {target} ({source}); a seed that never reaches it counts as "
        "never.</p>",
        "memory": "<p>Peak memory of rank zero's worker (GPU allocator peak on CUDA, the "
        "process's peak resident set on CPU). Comparable only when each run's "
        "workers are processes of their own: {isolated}.</p>",
        "throughput": "<p>Training samples per second of wall time.</p>",
        "cost": "<p>Node-hours are wall time times nodes (world size over workers per "
        "node, rounded up), priced at {price} per node-hour.</p>",
    }
    s = lambda col: page.cell("settings", 0, col)  # noqa: E731
    note = notes[key].format(
        target=s("target"),
        source=s("target_source"),
        isolated=s("memory_isolated"),
        price=s("price_per_node_hour"),
    )
    return note + page.table("comparison", cols, rows)
