"""The benchmarks page's chart and summary table are what the recorded runs draw (bench/chart.py),
and the chart reads on light and dark backgrounds with nothing fetched from outside."""

from __future__ import annotations

import json
import re
from pathlib import Path
from xml.etree import ElementTree

import pytest

from bench import chart, results

SVG = "{http://www.w3.org/2000/svg}"


def test_the_committed_chart_is_what_the_recorded_runs_draw() -> None:
    """docs/benchmarks.svg equals what `python -m bench.chart` draws from bench/results.json."""
    drawn = chart.svg(chart.load())

    assert chart.CHART.read_text(encoding="utf-8") == drawn


def test_the_pages_summary_table_is_what_the_recorded_runs_draw() -> None:
    """The table between the page's two markers is the one drawn from the same data."""
    page = chart.PAGE.read_text(encoding="utf-8")

    assert chart.page_with(page, chart.table(chart.load())) == page


def test_check_fails_when_the_chart_no_longer_matches_its_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--check` exits 1 and names the stale file, writing nothing."""
    stale = tmp_path / "benchmarks.svg"
    stale.write_text(chart.CHART.read_text(encoding="utf-8").replace("2.66 ms", "2.00 ms"))
    monkeypatch.setattr(chart, "CHART", stale)
    before = stale.read_text()

    status = chart.main(["--check"])

    assert status == 1
    assert "benchmarks.svg is not what bench/results.json draws" in capsys.readouterr().err
    assert stale.read_text() == before


def test_the_chart_is_svg_that_fetches_and_runs_nothing() -> None:
    """It parses as XML, is an SVG, and has no script, link or font from elsewhere."""
    root = ElementTree.parse(chart.CHART).getroot()  # noqa: S314 (our own file)

    assert root.tag == f"{SVG}svg"
    assert not [element.tag for element in root.iter() if element.tag.endswith("script")]
    assert not [name for element in root.iter() for name in element.attrib if name.endswith("href")]
    style = "".join(element.text or "" for element in root.iter(f"{SVG}style"))
    assert "@import" not in style
    assert "url(" not in style


def test_every_colour_of_the_chart_has_a_light_and_a_dark_value() -> None:
    """No element is coloured outside the stylesheet, and every class it uses is set in both
    the light rules and the dark ones (the background among them), so nothing is dark on dark."""
    root = ElementTree.parse(chart.CHART).getroot()  # noqa: S314 (our own file)
    style = "".join(element.text or "" for element in root.iter(f"{SVG}style"))
    light, dark = style.split("@media (prefers-color-scheme: dark)")

    used = {name for element in root.iter() for name in element.get("class", "").split()}
    colour_attributes = [
        (element.tag, name)
        for element in root.iter()
        for name in ("fill", "stroke", "color")
        if name in element.attrib
    ]

    assert "bg" in used
    assert colour_attributes == []
    assert {name for name in used if f".{name}{{" not in light} == set()
    assert {name for name in used if f".{name}{{" not in dark} == set()


def test_every_recorded_run_has_a_name_and_a_date() -> None:
    """Runs are named once each and dated; every result names one of them."""
    recorded = chart.load()
    names = [run.name for run in recorded.runs]

    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d", run.date) for run in recorded.runs)
    assert {result.run for measure in recorded.measures for result in measure.results} <= set(names)


def test_a_result_of_an_unknown_run_is_refused(tmp_path: Path) -> None:
    """Loading data whose result names a run that is not recorded raises ValueError."""
    data = json.loads(results.DATA.read_text(encoding="utf-8"))
    data["measures"][0]["results"][0]["run"] = "Z"
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data), encoding="utf-8")

    with pytest.raises(ValueError, match="unknown run 'Z'"):
        results.load(path)


def test_a_run_without_a_date_is_refused(tmp_path: Path) -> None:
    """A run recorded without its date raises ValueError naming what is missing."""
    data = json.loads(results.DATA.read_text(encoding="utf-8"))
    del data["runs"][0]["date"]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data), encoding="utf-8")

    with pytest.raises(ValueError, match="'date'"):
        results.load(path)


def test_a_ratio_without_the_prototypes_number_is_refused(tmp_path: Path) -> None:
    """A result giving a ratio over the prototype but not the prototype's number raises
    ValueError: the chart would print a ratio it cannot show the numbers of."""
    data = json.loads(results.DATA.read_text(encoding="utf-8"))
    del data["measures"][1]["results"][0]["prototype"]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data), encoding="utf-8")

    with pytest.raises(ValueError, match="'prototype'"):
        results.load(path)
