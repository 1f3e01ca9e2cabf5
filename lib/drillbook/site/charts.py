"""Trend charts for a drill's history, drawn at build time with matplotlib (PNG, no JavaScript).

* measures: every measure compared with an objective (RTO, RPO, …), one panel each, a line per
  environment, and that environment's objective as a dashed line (as recorded at run time);
* outcomes: every run as a dot per environment over time, coloured by status, hollow for dry runs;
* latency: the load's p50/p95/p99 (``measure.phases``), one panel per kind and phase (probe or
  write; before, during or after the fault), a line per percentile: the performance baseline.

Drawing is the slow part (importing matplotlib alone costs about 0.4 s), so the caller renders a
chart only when its data digest changed since the last build.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
from datetime import datetime
from typing import TYPE_CHECKING

from .data import RunSummary

if TYPE_CHECKING:  # annotations only: matplotlib is imported when a chart is drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

CHART_VERSION = 2  # bump when the drawing changes, so cached charts are redrawn
STATUS_COLOURS = {"passed": "#1a7f37", "failed": "#cf222e", "error": "#82071e", "aborted": "#9a6700"}
ENV_COLOURS = ["#0969da", "#8250df", "#bf3989", "#1b7c83", "#953800", "#57606a"]

Point = tuple[datetime, float, float | None, str]  # when, value, objective, verdict
LATENCY = re.compile(r"^(probe|write)_latency_(p\d+)_ms_(before|during|after)$")  # measure.phases' names
PHASE_ORDER = {"before": 0, "during": 1, "after": 2}


def measure_series(runs: list[RunSummary]) -> dict[str, dict[str, list[Point]]]:
    """Measure name → environment → points, for measures that name an objective."""
    series: dict[str, dict[str, list[Point]]] = {}
    for run in runs:
        if run.finished is None:
            continue
        for m in run.objective_measures():
            series.setdefault(m.name, {}).setdefault(run.env, []).append(
                (run.finished, m.value, m.objective_value, m.verdict))
    return series


def latency_series(runs: list[RunSummary]) -> dict[str, dict[str, list[tuple[datetime, float]]]]:
    """"<kind> <phase>" → percentile → points, from the latency measures of real runs."""
    series: dict[str, dict[str, list[tuple[datetime, float]]]] = {}
    for run in runs:
        if run.finished is None or run.dry_run:
            continue
        for m in run.measures:
            found = LATENCY.match(m.name)
            if found:
                kind, point, phase = found.groups()
                series.setdefault(f"{kind} {phase}", {}).setdefault(point, []).append((run.finished, m.value))
    return series


def render_latency(series: dict[str, dict[str, list[tuple[datetime, float]]]]) -> bytes:
    panels_order = sorted(series, key=lambda k: (k.split()[0], PHASE_ORDER[k.split()[1]]))
    figure = _figure(2.2 * len(panels_order) + 0.4)
    panels = figure.subplots(len(panels_order), 1, squeeze=False)[:, 0]
    for axes, name in zip(panels, panels_order, strict=True):
        for index, (point, points) in enumerate(sorted(series[name].items(), key=lambda p: int(p[0][1:]))):
            axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3,
                      color=ENV_COLOURS[index % len(ENV_COLOURS)], label=point)
        axes.set_title(f"{name} the fault", loc="left", fontsize=11)
        axes.set_ylabel("ms")
        axes.set_ylim(bottom=0)
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        _time_axis(axes)
    return _png(figure)


def outcome_points(runs: list[RunSummary]) -> list[tuple[datetime, str, str, bool]]:
    return [(r.finished, r.env, r.status, r.dry_run) for r in runs if r.finished is not None]


def digest(kind: str, data: object) -> str:
    text = json.dumps([CHART_VERSION, kind, data], default=str, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _figure(height: float) -> Figure:
    # Lazy: importing matplotlib costs about 0.4 s, paid only when a chart changed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)  # the Agg canvas: no display, no pyplot global state
    return figure


def _time_axis(axes: Axes) -> None:
    import matplotlib.dates as mdates  # lazy, like _figure: matplotlib's import time

    locator = mdates.AutoDateLocator()
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    axes.grid(True, alpha=0.3)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def render_measures(series: dict[str, dict[str, list[Point]]], units: dict[str, str]) -> bytes:
    figure = _figure(2.6 * len(series) + 0.4)
    panels = figure.subplots(len(series), 1, squeeze=False)[:, 0]
    for axes, (name, by_env) in zip(panels, sorted(series.items()), strict=True):
        for index, (env, points) in enumerate(sorted(by_env.items())):
            colour = ENV_COLOURS[index % len(ENV_COLOURS)]
            times = [p[0] for p in points]
            axes.plot(times, [p[1] for p in points], marker="o", markersize=4, color=colour, label=f"{env}: measured")
            targets = [(t, p[2]) for t, p in zip(times, points, strict=True) if p[2] is not None]
            if targets:
                axes.step([t for t, _ in targets], [v for _, v in targets], where="post", linestyle="--",
                          color=colour, alpha=0.8, label=f"{env}: objective")
            missed = [(p[0], p[1]) for p in points if p[3] == "missed"]
            if missed:
                axes.scatter([t for t, _ in missed], [v for _, v in missed], marker="x", s=60,
                             color=STATUS_COLOURS["failed"], zorder=3, label=f"{env}: missed")
        axes.set_title(name, loc="left", fontsize=11)
        axes.set_ylabel(units.get(name) or "value")
        axes.set_ylim(bottom=0)
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: never hides a point
        _time_axis(axes)
    return _png(figure)


def render_outcomes(points: list[tuple[datetime, str, str, bool]]) -> bytes:
    envs = sorted({p[1] for p in points})
    figure = _figure(1.0 + 0.45 * max(len(envs), 1))
    axes = figure.subplots()
    for status, colour in STATUS_COLOURS.items():
        for dry in (False, True):
            chosen = [p for p in points if p[2] == status and p[3] == dry]
            if not chosen:
                continue
            axes.scatter([p[0] for p in chosen], [envs.index(p[1]) for p in chosen], s=36, zorder=3,
                         facecolors="none" if dry else colour, edgecolors=colour,
                         label=f"{status}{' (dry run)' if dry else ''}")
    axes.set_yticks(range(len(envs)), envs)
    axes.set_ylim(-0.6, len(envs) - 0.4)
    axes.set_title("Outcome of every run", loc="left", fontsize=11)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _time_axis(axes)
    return _png(figure)
