"""Which method to trust: a leaderboard of several ``evaluate`` runs, with bootstrap confidence intervals over
images, as CSV, Markdown and one self-contained HTML page (the engine behind ``captum-ext compare``).

Each run folder holds ``metrics.json`` and ``pairs.csv``. A metric's interval resamples the *images* of the run with
replacement (all pairs of a drawn image come along) and recomputes the metric from the per-pair table, 1,000 times
by default with a fixed seed: the 2.5 % and 97.5 % quantiles. MaxBoxAccV2 and PxAP are dataset-level (a threshold
shared by all images, pooled pixel histograms) and are not recomputable from the table: their value is shown
without an interval.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from captum_ext.evaluation._comparability import incomparable

#: metrics.json key → (label, per-pair column, better) for the metrics a leaderboard shows, in order.
METRICS: Dict[str, Tuple[str, Optional[str], str]] = {
    "accuracy": ("accuracy", "recognised", "higher"),
    "pointing_game": ("pointing game", "pointing_hit", "higher"),
    "energy_pointing_game": ("energy", "energy", "higher"),
    "corloc": ("CorLoc", "corloc_hit", "higher"),
    "maxboxacc_v2": ("MaxBoxAccV2", None, "higher"),
    "pxap": ("PxAP", None, "higher"),
    "deletion_auc": ("deletion AUC", "deletion_auc", "lower"),
    "insertion_auc": ("insertion AUC", "insertion_auc", "higher"),
    "infidelity": ("infidelity", "infidelity", "lower"),
    "sensitivity_max": ("max-sensitivity", "sensitivity_max", "lower"),
    "road_morf": ("ROAD MoRF", "road_morf", "lower"),
    "road_lerf": ("ROAD LeRF", "road_lerf", "higher"),
}


@dataclass
class Run:
    """One ``evaluate`` run read back: its name, settings, summary and per-pair table."""

    name: str
    folder: Path
    summary: Dict[str, Any]
    rows: List[Dict[str, str]] = field(default_factory=list)


@dataclass
class Score:
    """A metric of a run: its value and bootstrap interval (``None`` where the table cannot give one)."""

    value: Optional[float]
    low: Optional[float] = None
    high: Optional[float] = None

    def text(self) -> str:
        """The score as a table shows it.

        Returns:
            str: ``0.812 [0.790, 0.833]``, or ``—`` for a metric the run lacks.
        """
        if self.value is None:
            return "—"
        interval = f" [{self.low:.3f}, {self.high:.3f}]" if self.low is not None else ""
        return f"{self.value:.3f}{interval}"


def read_run(folder: Union[str, Path]) -> Run:
    """Read a finished ``evaluate`` folder.

    Args:
        folder (str or Path): the run's ``out`` folder.

    Returns:
        Run: its summary and table; the name is the method, with the folder's name when that differs.

    Raises:
        FileNotFoundError: the folder has no ``metrics.json`` (naming it).
        ValueError: ``metrics.json`` or ``pairs.csv`` is not readable, or ``pairs.csv`` is missing from a run that
            scored pairs (naming the file).
    """
    folder = Path(folder)
    path = folder / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{str(folder)!r} holds no finished evaluate run (no metrics.json)")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
        method = str(summary["settings"]["method"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{str(path)!r} is not an evaluate summary: {err}") from None
    table = folder / "pairs.csv"
    rows = list(csv.DictReader(table.read_text(encoding="utf-8").splitlines())) if table.is_file() else []
    for line, row in enumerate(rows, start=2):  # a cut-off file leaves its last row short
        if None in row or None in row.values():
            raise ValueError(f"{str(table)!r} is not a complete evaluate table: line {line} has "
                             f"{'more' if None in row else 'fewer'} fields than its header")
    pairs = summary.get("n_pairs")
    if not table.is_file() and isinstance(pairs, int) and pairs > 0:  # evaluate writes both: the folder is damaged
        raise ValueError(f"{str(table)!r} is missing: {str(path)!r} counts {pairs} pairs, whose table it is")
    if table.is_file() and isinstance(pairs, int) and len(rows) != pairs:  # cut off at a line's end
        raise ValueError(f"{str(table)!r} holds {len(rows)} pairs, but {str(path)!r} counts {pairs}")
    name = method if folder.name in (method, "") else f"{method} ({folder.name})"
    return Run(name, folder, summary, rows)


def _images_and_columns(run: Run, column: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pair: image index, the column as float, and the class index."""
    booleans = {"True": 1.0, "False": 0.0}  # csv writes the recognised column as Python booleans
    try:
        image = np.array([int(r["image_index"]) for r in run.rows], dtype=np.int64)
        values = np.array([booleans[r[column]] if r[column] in booleans else float(r[column])
                           for r in run.rows], dtype=np.float64)
        classes = np.array([int(r["class_index"]) for r in run.rows], dtype=np.int64)
    except (KeyError, ValueError) as err:
        raise ValueError(f"{str(run.folder / 'pairs.csv')!r} is not a readable evaluate table: {err}") from None
    if not np.isfinite(values).all():  # evaluate writes finite scores only: an interval over NaN would be NaN
        line = int(np.flatnonzero(~np.isfinite(values))[0]) + 2
        raise ValueError(f"{str(run.folder / 'pairs.csv')!r} holds {run.rows[line - 2][column]!r} in column "
                         f"{column!r} at line {line}: not an evaluate score")
    return image, values, classes


def _statistic(key: str, values: np.ndarray, classes: np.ndarray) -> float:
    if key == "pointing_game":  # TorchRay's class mean
        present = np.unique(classes)
        return float(np.mean([values[classes == c].mean() for c in present]))
    return float(values.mean())


def score(run: Run, key: str, resamples: int = 1000, seed: int = 0) -> Score:
    """A metric of a run with its bootstrap interval over images.

    Args:
        run (Run): the run.
        key (str): a key of :data:`METRICS`.
        resamples (int): bootstrap resamples (0: no interval).
        seed (int): the resampling seed.

    Returns:
        Score: the value from ``metrics.json`` and the interval from the table where it can be recomputed.
    """
    value = run.summary.get(key)
    if not isinstance(value, (int, float)):
        return Score(None)
    column = METRICS[key][1]
    if column is None or resamples <= 0 or not run.rows or column not in run.rows[0]:
        return Score(float(value))
    image, values, classes = _images_and_columns(run, column)
    images = np.unique(image)
    pairs_of = {i: np.flatnonzero(image == i) for i in images}
    rng = np.random.default_rng(seed)
    estimates = []
    for _ in range(resamples):
        drawn = np.concatenate([pairs_of[i] for i in rng.choice(images, size=len(images), replace=True)])
        estimates.append(_statistic(key, values[drawn], classes[drawn]))
    low, high = np.quantile(estimates, [0.025, 0.975])
    return Score(float(value), float(low), float(high))


def leaderboard(runs: Sequence[Run], resamples: int = 1000, seed: int = 0) -> Dict[str, Dict[str, Score]]:
    """Every run's scores on the metrics any of them has.

    Args:
        runs (sequence of Run): the runs.
        resamples (int): bootstrap resamples per metric.
        seed (int): the resampling seed.

    Returns:
        dict: run name → metric key → :class:`Score`.
    """
    keys = [k for k in METRICS if any(isinstance(r.summary.get(k), (int, float)) for r in runs)]
    return {run.name: {k: score(run, k, resamples, seed) for k in keys} for run in runs}


def _markdown(board: Dict[str, Dict[str, Score]], runs: Sequence[Run]) -> str:
    keys = list(next(iter(board.values())))
    head = "| method | pairs | " + " | ".join(f"{METRICS[k][0]} ({METRICS[k][2]} is better)" for k in keys) + " |"
    lines = [head, "|---|---|" + "---|" * len(keys)]
    for run in runs:
        lines.append(f"| {run.name} | {run.summary.get('n_pairs', '?')} | "
                     + " | ".join(board[run.name][k].text() for k in keys) + " |")
    warning = incomparable(runs)
    return "\n".join(lines + ([f"\n**{warning}**"] if warning else [])) + "\n"


def _chart(board: Dict[str, Dict[str, Score]], key: str) -> str:
    """A horizontal bar chart of one metric across runs, intervals as whiskers, as a base64 PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in board if board[n][key].value is not None]
    fig, axis = plt.subplots(figsize=(4.2, 0.45 * len(names) + 0.9))
    values = [board[n][key].value for n in names]
    errors = np.array([[v - (board[n][key].low if board[n][key].low is not None else v),
                        (board[n][key].high if board[n][key].high is not None else v) - v]
                       for n, v in zip(names, values)]).T
    with_intervals = any(board[n][key].low is not None for n in names)
    axis.barh(names, values, xerr=errors if with_intervals else None, color="#4477aa", capsize=3)
    axis.invert_yaxis()
    # Scores in [0, 1] on a fixed axis, so charts compare at a glance; unbounded ones (infidelity, max-sensitivity)
    # on an axis that holds every bar and whisker.
    ends = [v for n in names for v in (board[n][key].value, board[n][key].low, board[n][key].high) if v is not None]
    low, high = min(ends + [0.0]), max(ends + [1.0])
    axis.set_xlim(low * 1.05 if low < 0 else 0.0, high * 1.05 if high > 1 else 1.0)
    axis.set_title(f"{METRICS[key][0]} ({METRICS[key][2]} is better)", fontsize=9)
    axis.tick_params(labelsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>captum_ext: which method to trust</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1rem auto; max-width: 1100px; padding: 0 1rem; color: #222; }}
.scroll {{ overflow-x: auto; }}
p {{ overflow-wrap: anywhere; }}
table {{ border-collapse: collapse; font-size: 0.9rem; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.3rem 0.6rem; text-align: right; white-space: nowrap; }}
th:first-child, td:first-child {{ text-align: left; }}
th {{ cursor: pointer; background: #f4f4f4; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 0.5rem; }}
.charts img {{ max-width: 100%; }}
table.gallery td, table.gallery th {{ vertical-align: top; text-align: center; padding: 0.2rem; }}
figure {{ margin: 0; display: inline-block; width: 112px; }}
figure img {{ display: block; width: 112px; }}
figcaption {{ font-size: 0.7rem; white-space: normal; }}
.strip {{ display: flex; gap: 0.3rem; }}
.missing {{ width: 112px; height: 112px; background: #eee; font-size: 0.7rem; }}
.note {{ color: #a33; }}
details {{ margin: 0.4rem 0; }} summary {{ cursor: pointer; font-weight: 600; }}
</style></head><body>
<h1>Which method to trust</h1>
<p>{intro}</p>
<h2>Leaderboard</h2>
<p>Value from each run's <code>metrics.json</code>; {intervals} Click a column to sort.</p>
<div class="scroll"><table id="board"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>
<h2>Per metric</h2>
<div class="charts">{charts}</div>
{gallery}
<script>
document.querySelectorAll("#board th").forEach(function (th, col) {{
  th.addEventListener("click", function () {{
    var body = document.querySelector("#board tbody");
    var rows = Array.from(body.rows), down = th.dataset.down !== "1";
    rows.sort(function (a, b) {{
      var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
      var nx = parseFloat(x), ny = parseFloat(y);
      var r = (isNaN(nx) || isNaN(ny)) ? String(x).localeCompare(String(y)) : nx - ny;
      return down ? -r : r;
    }});
    th.dataset.down = down ? "1" : "0";
    rows.forEach(function (row) {{ body.appendChild(row); }});
  }});
}});
</script></body></html>
"""


def _html(board: Dict[str, Dict[str, Score]], runs: Sequence[Run], resamples: int, same_pairs: int = 6,
          examples: int = 2) -> str:
    from captum_ext.evaluation._gallery import gallery_html

    keys = list(next(iter(board.values())))
    head = "<th>method</th><th>pairs</th>" + "".join(
        f"<th title='{METRICS[k][2]} is better'>{html.escape(METRICS[k][0])}</th>" for k in keys)
    body = []
    for run in runs:
        cells = [f"<td data-v='{html.escape(run.name)}'>{html.escape(run.name)}</td>",
                 f"<td data-v='{run.summary.get('n_pairs', '')}'>{run.summary.get('n_pairs', '?')}</td>"]
        for k in keys:
            item = board[run.name][k]
            cells.append(f"<td data-v='{'' if item.value is None else item.value}'>{html.escape(item.text())}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    charts = "".join(f"<img alt='{html.escape(METRICS[k][0])}' src='data:image/png;base64,{_chart(board, k)}'>"
                     for k in keys)
    data = sorted({str(r.summary.get("settings", {}).get("data", "?")) for r in runs})
    lower = ", ".join(METRICS[k][0] for k in keys if METRICS[k][2] == "lower")
    better = (f"{lower[0].upper() + lower[1:]}: lower is better; every other metric: higher is better." if lower
              else "Higher is better for every metric.")
    runs_said = f"{len(runs)} run{'s' if len(runs) != 1 else ''}"
    intro = f"{runs_said} of <code>captum-ext evaluate</code> on {html.escape(', '.join(data))}. {better}"
    warning = incomparable(runs)
    intro += f" <strong>{html.escape(warning)}</strong>" if warning else ""
    intervals = (f"in brackets a 95&nbsp;% bootstrap interval over images ({resamples} resamples)." if resamples
                 else "no bootstrap intervals (0 resamples).")
    return _PAGE.format(intro=intro, intervals=intervals, head=head, body="".join(body), charts=charts,
                        gallery=gallery_html(runs, same_pairs, examples))


def compare(runs: Sequence[Union[str, Path]], out: Union[str, Path], resamples: int = 1000, seed: int = 0,
            same_pairs: int = 6, examples: int = 2) -> Dict[str, Dict[str, Score]]:
    """Write ``leaderboard.csv``, ``leaderboard.md`` and ``index.html`` comparing ``evaluate`` runs.

    Args:
        runs (sequence of str or Path): run folders (``evaluate``'s ``out``).
        out (str or Path): the folder to write into (created).
        resamples (int): bootstrap resamples over images. Default: 1000.
        seed (int): the resampling seed. Default: 0.
        same_pairs (int): pairs the page shows across every method, evenly spread over the dataset (the image
            with the class's boxes and mask, then each method's map). 0 leaves this gallery out. Default: 6.
        examples (int): each method's best and worst pairs per ranking metric on the page (energy, box IoU,
            deletion / insertion AUC, infidelity, max-sensitivity, ROAD). 0 leaves them out. Default: 2.

    Returns:
        dict: run name → metric key → :class:`Score`.

    Raises:
        ValueError: no runs, two runs with the same name, a negative count or seed, or an ``out`` holding the
            results of ``evaluate`` runs other than ``runs`` (whose leaderboard would be replaced).
        FileNotFoundError: a folder without ``metrics.json``.

    Example::

        >>> import tempfile
        >>> from captum_ext.evaluation import evaluate
        >>> work = Path(tempfile.mkdtemp())
        >>> _ = evaluate("zoo:scenes_vgg", "saliency", "scenes:single:4", work / "saliency", show_progress=False)
        >>> board = compare([work / "saliency"], work / "report", resamples=50)
        >>> sorted(p.name for p in (work / "report").iterdir())
        ['index.html', 'leaderboard.csv', 'leaderboard.md']
    """
    if not runs:
        raise ValueError("`runs` must name at least one evaluate folder")
    for name, count in (("same_pairs", same_pairs), ("examples", examples), ("resamples", resamples),
                        ("seed", seed)):
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ValueError(f"`{name}` must be an int >= 0, got {count!r}")
    _check_out(Path(out), runs)
    read = [read_run(folder) for folder in runs]
    names = [r.name for r in read]
    if len(set(names)) != len(names):
        raise ValueError(f"runs must be told apart by method or folder name, got {names}")
    board = leaderboard(read, resamples, seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "leaderboard.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "folder", "metric", "value", "ci_low", "ci_high", "better"])
        for run in read:
            for key, item in board[run.name].items():
                writer.writerow([run.name, str(run.folder), key, item.value, item.low, item.high, METRICS[key][2]])
    (out / "leaderboard.md").write_text(_markdown(board, read), encoding="utf-8")
    (out / "index.html").write_text(_html(board, read, resamples, same_pairs, examples), encoding="utf-8")
    return board


def _check_out(out: Path, runs: Sequence[Union[str, Path]]) -> None:
    """Refuse to write into an ``evaluate`` folder with a comparison of other runs: one method's run folder, or the
    leaderboard of a folder of several methods (rewriting it from its own method folders, as ``evaluate`` does, is
    allowed)."""
    if out.is_file():
        raise ValueError(f"`out` {str(out)!r} is a file, not a folder")
    if not out.is_dir():
        return
    compared = {Path(run).resolve() for run in runs}
    if (out / "metrics.json").is_file() and out.resolve() not in compared:  # one method's evaluate folder
        raise ValueError(f"`out` {str(out)!r} holds the results of another evaluate run: choose another folder")
    own = {p.parent.resolve() for p in out.glob("*/metrics.json")}
    if own and own != compared:
        names = ", ".join(sorted(p.name for p in own))
        raise ValueError(f"`out` {str(out)!r} holds evaluate results ({names}) whose leaderboard and report would be "
                         f"replaced by a comparison of other runs: choose another folder")


def run_compare(args: Any) -> int:
    """Run ``captum-ext compare`` from parsed arguments; prints the Markdown leaderboard and where the report is.

    Args:
        args (argparse.Namespace): ``runs``, ``out``, ``resamples``, ``seed``, ``gallery``, ``examples``.

    Returns:
        int: the exit status, 0.
    """
    for flag, count in (("--resamples", args.resamples), ("--gallery", args.gallery), ("--examples", args.examples),
                        ("--seed", args.seed)):
        if count < 0:
            raise ValueError(f"{flag} must be >= 0, got {count}")
    compare(args.runs, args.out, args.resamples, args.seed, args.gallery, args.examples)
    print((Path(args.out) / "leaderboard.md").read_text(encoding="utf-8"))
    print(f"report: {(Path(args.out) / 'index.html').resolve()}")
    return 0
