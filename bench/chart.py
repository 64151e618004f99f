"""The summary of docs/benchmarks.md, drawn from the recorded runs in bench/results.json.

    .venv/bin/python -m bench.chart           # writes docs/benchmarks.svg and the page's table
    .venv/bin/python -m bench.chart --check   # exits 1 if either is not what the data draws

Standard library only. The SVG brings its own background, and a `prefers-color-scheme` rule
switches background and ink together, so it reads on GitHub's light and dark themes alike.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from xml.sax.saxutils import escape

from bench.results import Measure, Recorded, load

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "docs" / "benchmarks.svg"
PAGE = ROOT / "docs" / "benchmarks.md"
TABLE_START = "<!-- summary table: drawn by python -m bench.chart from bench/results.json -->"
TABLE_END = "<!-- end of summary table -->"

# Light first; the dark rule swaps background and ink together, so a viewer whose page theme
# and system theme differ still sees dark on light or light on dark, never dark on dark.
STYLE = """
.bg{fill:#ffffff;stroke:#d0d7de}.ink{fill:#1f2328}.muted{fill:#59636e}
.grid{stroke:#d8dee4}.even{stroke:#1f2328}
.r0{fill:#9a6700;stroke:#9a6700}.r1{fill:#1a7f37;stroke:#1a7f37}.r2{fill:#0969da;stroke:#0969da}
.r3{fill:#8250df;stroke:#8250df}
@media (prefers-color-scheme: dark){
.bg{fill:#0d1117;stroke:#3d444d}.ink{fill:#f0f6fc}.muted{fill:#9198a1}
.grid{stroke:#2a313c}.even{stroke:#f0f6fc}
.r0{fill:#d29922;stroke:#d29922}.r1{fill:#3fb950;stroke:#3fb950}.r2{fill:#4493f8;stroke:#4493f8}
.r3{fill:#ab7df8;stroke:#ab7df8}
}
""".strip()
RUN_COLOURS = 4  # .r0 to .r3 above
TIMES, DASH = "\N{MULTIPLICATION SIGN}", "\N{EN DASH}"
FONT = "-apple-system,BlinkMacSystemFont,'Segoe UI','Noto Sans',Helvetica,Arial,sans-serif"

WIDTH = 800
LABEL_X = 20
PLOT_LEFT, PLOT_RIGHT = 270.0, 590.0
VALUES_X = 606
RATIO_LOW, RATIO_HIGH = 0.5, 2.25
TICKS = (0.5, 1.0, 1.5, 2.0)
RUN_STEP = 15  # vertical distance between two runs' lines within a measure
TOP = 100
TITLE = "tokenrota beside a bare Starlette prototype: speed, ours over the prototype's"
FOOTNOTE = (
    "Dot: a run's median over its rounds; line: its lowest to highest round. A ratio is taken "
    "within a round, then its median.",
    "One 2-core machine, Postgres and the load generator on the same cores. "
    "Data: bench/results.json.",
)


def number(value: float, unit: str) -> str:
    """`value` as the method notes write it: thousands without a separator, no trailing zeros."""
    text = f"{value:.2f}".rstrip("0").rstrip(".") if value < 100 else f"{value:.0f}"
    return f"{text}{unit}" if unit == "/s" else f"{text} {unit}"


def ratio_text(ratio: tuple[float, float, float]) -> str:
    median, low, high = ratio
    return f"{median:.2f}{TIMES} ({low:.2f}{DASH}{high:.2f})"


def table(recorded: Recorded) -> str:
    """The page's summary table: each measure's latest run, beside the prototype where measured."""
    lines = [
        "| route | measured | tokenrota | bare prototype | speed, ours / prototype | run |",
        "|---|---|---|---|---|---|",
    ]
    for measure in recorded.measures:
        latest = measure.results[-1]
        run = recorded.run(latest.run)
        prototype = DASH if latest.prototype is None else number(latest.prototype, measure.unit)
        speed = DASH if latest.ratio is None else ratio_text(latest.ratio)
        cells = [
            f"`{measure.route}`",
            measure.measure,
            number(latest.ours, measure.unit),
            prototype,
            speed,
            f"[{run.name}]({run.notes}), {run.date}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def x_of(ratio: float) -> float:
    share = (ratio - RATIO_LOW) / (RATIO_HIGH - RATIO_LOW)
    return PLOT_LEFT + share * (PLOT_RIGHT - PLOT_LEFT)


def text(x: float, y: float, content: str, css: str, size: int = 12, **extra: str) -> str:
    attributes = "".join(f' {key.replace("_", "-")}="{value}"' for key, value in extra.items())
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" class="{css}" font-size="{size}"{attributes}>'
        f"{escape(content)}</text>"
    )


def svg(recorded: Recorded) -> str:
    """The chart: for each measure beside the prototype, every run's median ratio and spread."""
    measures = [measure for measure in recorded.measures if measure.beside_prototype]
    charted = {result.run for measure in measures for result in measure.beside_prototype}
    run_names = [run.name for run in recorded.runs if run.name in charted]
    if len(run_names) > RUN_COLOURS:
        raise ValueError(f"the chart has colours for {RUN_COLOURS} runs, not {len(run_names)}")
    colour = {name: f"r{index}" for index, name in enumerate(run_names)}

    rows, plot_bottom = _rows(measures, colour)
    axis, axis_y = _axis(plot_bottom)
    dates = sorted({recorded.run(name).date for name in run_names})
    legend = [text(LABEL_X, 58, f"runs ({', '.join(dates)}):", "muted")]
    for index, name in enumerate(run_names):
        legend_x = LABEL_X + 150 + 42 * index
        legend.append(f'<circle cx="{legend_x}" cy="54" r="4.5" class="{colour[name]}"/>')
        legend.append(text(legend_x + 9, 58, name, "ink"))
    footer_y = axis_y + 26
    footer = [
        text(LABEL_X, footer_y, FOOTNOTE[0], "muted"),
        text(LABEL_X, footer_y + 16, FOOTNOTE[1], "muted"),
    ]
    height = int(footer_y + 30)
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
            f'viewBox="0 0 {WIDTH} {height}" font-family="{FONT}" role="img">',
            f"<title>{escape(TITLE)}</title>",
            f"<style>{STYLE}</style>",
            f'<rect x="0.5" y="0.5" width="{WIDTH - 1}" height="{height - 1}" rx="6" class="bg"/>',
            text(LABEL_X, 30, TITLE, "ink", 15, font_weight="600"),
            *legend,
            *axis,
            *rows,
            *footer,
            "</svg>\n",
        ]
    )


def _rows(measures: list[Measure], colour: dict[str, str]) -> tuple[list[str], float]:
    """Each measure's label, its runs' dots and lines, its latest numbers; and where they end."""
    elements: list[str] = []
    slots = max(len(measure.beside_prototype) for measure in measures)
    y = float(TOP)
    for row, measure in enumerate(measures):
        runs = measure.beside_prototype
        if row:
            elements.append(
                f'<line x1="{LABEL_X}" y1="{y - 5:.1f}" x2="{WIDTH - LABEL_X}" y2="{y - 5:.1f}" '
                'class="grid" stroke-width="1"/>'
            )
        middle = y + 8 + RUN_STEP * (slots - 1) / 2
        elements.append(text(LABEL_X, middle - 3, measure.route, "ink", 13, font_weight="600"))
        elements.append(text(LABEL_X, middle + 13, measure.measure, "muted"))
        first = middle - RUN_STEP * (len(runs) - 1) / 2
        for index, result in enumerate(runs):
            assert result.ratio is not None
            median, low, high = result.ratio
            line_y, css = first + index * RUN_STEP, colour[result.run]
            elements.append(
                f'<line x1="{x_of(low):.1f}" y1="{line_y:.1f}" x2="{x_of(high):.1f}" '
                f'y2="{line_y:.1f}" class="{css}" stroke-width="2" stroke-linecap="round"/>'
            )
            elements.append(
                f'<circle cx="{x_of(median):.1f}" cy="{line_y:.1f}" r="4.5" class="{css}"/>'
            )
        latest = runs[-1]
        assert latest.prototype is not None
        theirs = f"prototype {number(latest.prototype, measure.unit)} (run {latest.run})"
        elements.append(
            text(VALUES_X, middle - 3, f"ours {number(latest.ours, measure.unit)}", "ink")
        )
        elements.append(text(VALUES_X, middle + 13, theirs, "muted"))
        y += RUN_STEP * slots + 20
    return elements, y - 8


def _axis(plot_bottom: float) -> tuple[list[str], float]:
    """The ratio grid, the prototype's own speed dashed, their labels; and the legend's line."""
    elements: list[str] = []
    for tick in TICKS:
        # The prototype's own speed, dashed: the line every dot is read against.
        css, dash = ("even", ' stroke-dasharray="4 3"') if tick == 1.0 else ("grid", "")
        elements.append(
            f'<line x1="{x_of(tick):.1f}" y1="{TOP - 6}" x2="{x_of(tick):.1f}" '
            f'y2="{plot_bottom:.1f}" class="{css}" stroke-width="1"{dash}/>'
        )
        elements.append(
            text(x_of(tick), plot_bottom + 16, f"{tick:g}{TIMES}", "muted", text_anchor="middle")
        )
    elements.append(text(x_of(1.0), TOP - 12, "the prototype", "muted", text_anchor="middle"))
    axis_y = plot_bottom + 34
    elements.append(
        text(x_of(1.0) - 8, axis_y, "← slower than the prototype", "muted", text_anchor="end")
    )
    elements.append(text(x_of(1.0) + 8, axis_y, "faster →", "muted"))
    return elements, axis_y


def page_with(page: str, summary: str) -> str:
    """`page` with the text between the table's two markers replaced by `summary`."""
    start, end = page.index(TABLE_START) + len(TABLE_START), page.index(TABLE_END)
    return f"{page[:start]}\n{summary}{page[end:]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chart", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    arguments = parser.parse_args(argv)
    recorded = load()
    drawn, page = svg(recorded), PAGE.read_text(encoding="utf-8")
    summarised = page_with(page, table(recorded))
    if arguments.check:
        stale = [
            path.name
            for path, now, wanted in (
                (CHART, CHART.read_text(encoding="utf-8"), drawn),
                (PAGE, page, summarised),
            )
            if now != wanted
        ]
        for name in stale:
            print(
                f"{name} is not what bench/results.json draws: run python -m bench.chart",
                file=sys.stderr,
            )
        return 1 if stale else 0
    CHART.write_text(drawn, encoding="utf-8")
    PAGE.write_text(summarised, encoding="utf-8")
    print(f"wrote {CHART.relative_to(ROOT)} and the table of {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
