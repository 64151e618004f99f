"""The recorded benchmark runs (bench/results.json): each run named and dated, and what each
route measured in it, beside the bare prototype where both were measured."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "results.json"


@dataclass(frozen=True)
class Run:
    """One recorded run: its name in the method notes, its date and how it was made."""

    name: str
    date: str
    command: str
    conditions: str
    notes: str  # where the run is written up, as a link from docs/


@dataclass(frozen=True)
class Result:
    """One run's numbers for a measure; `ratio` is (median, lowest, highest) over its rounds."""

    run: str
    ours: float
    prototype: float | None
    ratio: tuple[float, float, float] | None


@dataclass(frozen=True)
class Measure:
    """A route measured one way (one at a time, under load ...), in every run that did."""

    route: str
    measure: str
    unit: str
    results: tuple[Result, ...]

    @property
    def beside_prototype(self) -> tuple[Result, ...]:
        return tuple(result for result in self.results if result.ratio is not None)


@dataclass(frozen=True)
class Recorded:
    runs: tuple[Run, ...]
    measures: tuple[Measure, ...]

    def run(self, name: str) -> Run:
        return next(run for run in self.runs if run.name == name)


def load(path: Path = DATA) -> Recorded:
    """The recorded runs in `path`; ValueError names the first thing missing or unknown."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    try:
        runs = tuple(
            Run(**{field.name: str(run[field.name]) for field in fields(Run)})
            for run in raw["runs"]
        )
        measures = tuple(_measure(measure) for measure in raw["measures"])
    except (KeyError, TypeError, IndexError) as missing:
        raise ValueError(f"{path.name}: missing or malformed {missing}") from missing
    names = {run.name for run in runs}
    for measure in measures:
        for result in measure.results:
            if result.run not in names:
                raise ValueError(
                    f"{path.name}: {measure.route} names an unknown run {result.run!r}"
                )
    return Recorded(runs, measures)


def _measure(raw: dict[str, Any]) -> Measure:
    results = []
    for result in raw["results"]:
        ratio = result.get("ratio")
        if ratio is not None and "prototype" not in result:
            raise KeyError("prototype")  # a ratio is over the prototype's own number
        results.append(
            Result(
                run=str(result["run"]),
                ours=float(result["ours"]),
                prototype=float(result["prototype"]) if "prototype" in result else None,
                ratio=(float(ratio[0]), float(ratio[1]), float(ratio[2])) if ratio else None,
            )
        )
    if not results:
        raise KeyError("results")
    return Measure(str(raw["route"]), str(raw["measure"]), str(raw["unit"]), tuple(results))
