"""Ours vs published: results.json -> markdown table (+ bar plot); every finished run -> RESULTS.md.

    from shared.report import write_results
    write_results(run_dir, "adnet", "nih_convnext", {"auroc": {"Atelectasis": 0.81, "mean": 0.838}},
                  published_key="IN1K-NIH-ConvNeXt-T-448", notes=["checkpoint selected on the test split"])

    python -m shared.report runs/adnet/nih_convnext/20261121-2300     # prints; writes report.md + report.png
    python -m shared.report --all runs --out RESULTS.md                # one table per method/config

results.json (written atomically by ``write_results``)::

    {"method": "adnet", "config": "nih_convnext", "published_key": "IN1K-NIH-ConvNeXt-T-448",
     "metrics": {"auroc": {"Atelectasis": 0.81, "mean": 0.838}}, "notes": ["..."], "headline": [["auroc", "mean"]]}

Metric values are fractions in [0, 1] (counts such as a mean rank are plain numbers); NaN is written as null and
shown as "NaN". ``metrics`` maps a metric name to a number or to {row (class): number}; deeper nesting is allowed
and flattened to metric "a/b", row = the last key. A pandas DataFrame value becomes {column: {row: value}}
(so ``{"retrieval@10": table}`` gives metrics "retrieval@10/mAP" ... with the class rows).

<repo>/<method>/published.yaml (found from the method name; <repo> is the directory above ``shared/``)::

    IN1K-NIH-ConvNeXt-T-448:
      source: "ADNet README, results table"     # required: where the numbers come from
      scale: 100                                # published value / scale = fraction (default 1)
      scales: {mean_rank: 1}                    # optional per-metric override of scale
      metrics: {auroc: {mean: 83.8}}            # same shape as results.json's metrics, numbers as published
    HAM-NIH-cls:
      source: "Ouyang et al. 2021, Table II"
      status: "not yet transcribed"             # no numbers yet: the table says so

Top-level keys starting with "_" are free-form metadata. ``compare`` converts published numbers to fractions
(value / scale) and gives ours, published, delta = ours - published; anything missing reads "not available"
(or the entry's status, e.g. "not yet transcribed") — never a guessed number.
The headline rows (used by ``--all``) are ``results["headline"]`` when given, else every scalar metric and every
row named one of ``SUMMARY_ROWS`` ("mean", "Class Average", "macro", "micro", ...), else all rows.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd
import yaml

__all__ = ["write_results", "read_results", "load_published", "published_entry", "compare", "render_markdown",
           "plot_comparison", "report_run", "aggregate", "main", "NOT_AVAILABLE", "SUMMARY_ROWS", "repo_root"]

NOT_AVAILABLE = "not available"
SUMMARY_ROWS = ("mean", "Class Average", "Class Weighted Average", "macro", "micro", "average", "overall")
RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
PLOT_FILE = "report.png"


def repo_root() -> Path:
    """The repository root: the directory that contains ``shared/`` (no method package is imported)."""
    return Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------ results.json
def _number(value, where: str):
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, (int, float)):   # numpy / torch scalar
        if getattr(value, "ndim", 0) != 0 and not (hasattr(value, "numel") and value.numel() == 1):
            raise TypeError(f"metric {where}: expected a scalar, got shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"metric {where}: expected a number or None, got {type(value).__name__} {value!r}")
    value = float(value) if isinstance(value, float) else int(value)
    return None if isinstance(value, float) and math.isnan(value) else value


def _clean(tree, where: str = ""):
    """Metrics tree -> plain JSON (str keys, numbers / None); DataFrame -> {column: {row: value}}."""
    if isinstance(tree, pd.DataFrame):
        tree = {str(c): {str(r): v for r, v in tree[c].items()} for c in tree.columns}
    elif isinstance(tree, pd.Series):
        tree = {str(r): v for r, v in tree.items()}
    if isinstance(tree, Mapping):
        if not tree:
            raise ValueError(f"metric {where or '<root>'}: empty mapping")
        return {str(k): _clean(v, f"{where}/{k}" if where else str(k)) for k, v in tree.items()}
    return _number(tree, where)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_results(run_dir, method: str, config: str, metrics: Mapping[str, Any], published_key: str | None = None,
                  notes: Iterable[str] = (), headline: Sequence[Sequence[str] | str] | None = None) -> Path:
    """Write ``run_dir/results.json`` atomically and return its path (see module doc for the format).

    ``headline``: optional rows to show in RESULTS.md, each "metric/row", ("metric", "row") or "metric" for a
    scalar metric. ``metrics`` may also be one DataFrame (columns = metrics, rows = classes).
    """
    for name, value in (("method", method), ("config", config)):
        if not isinstance(value, str) or not value:
            raise TypeError(f"{name} must be a non-empty string (the name), got {value!r}")
    if not isinstance(metrics, (Mapping, pd.DataFrame)):
        raise TypeError(f"metrics must be a mapping or a DataFrame, got {type(metrics).__name__}")
    if isinstance(notes, str):
        notes = [notes]
    data: dict[str, Any] = {"method": method, "config": config, "published_key": published_key,
                            "metrics": _clean(metrics), "notes": [str(n) for n in notes]}
    if headline is not None:
        data["headline"] = [_split_row(h) for h in headline]
    path = Path(run_dir) / RESULTS_FILE
    _atomic_write(path, json.dumps(data, indent=2, allow_nan=False) + "\n")
    return path


def _split_row(h) -> list[str]:
    if isinstance(h, str):
        metric, _, row = h.rpartition("/")
        return [metric, row] if metric else [row, ""]
    h = [str(x) for x in h]
    if len(h) == 1:
        return [h[0], ""]
    if len(h) != 2:
        raise ValueError(f"headline row must be 'metric/row' or (metric, row), got {h}")
    return h


def read_results(path) -> dict:
    """Read a results.json (or the one in a run directory) and check its required keys."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {RESULTS_FILE} at {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON: {err}") from err
    for key in ("method", "config", "metrics"):
        if key not in data:
            raise ValueError(f"{path}: missing key {key!r}")
    if not isinstance(data["metrics"], dict):
        raise ValueError(f"{path}: 'metrics' must be a mapping")
    data.setdefault("published_key", None)
    data.setdefault("notes", [])
    data["_path"] = str(path)
    return data


# ------------------------------------------------------------------------------------------ published.yaml
def load_published(method_dir_or_yaml) -> dict:
    """Read a method's published.yaml (given the file or the method directory); validate every entry.

    Returns {key: entry}; an entry has ``source`` and either ``metrics`` (+ optional ``scale``, ``scales``)
    or ``status``. A mistake raises ValueError naming the file and the key.
    """
    path = Path(method_dir_or_yaml)
    if path.is_dir():
        path = path / "published.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"published table not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: invalid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a mapping of key -> entry")
    out = {}
    for key, entry in data.items():
        key = str(key)
        if key.startswith("_"):
            continue
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: entry {key!r} must be a mapping with 'source' and 'metrics' or 'status'")
        if not entry.get("source"):
            raise ValueError(f"{path}: entry {key!r} has no 'source' (every published number must name one)")
        if "metrics" not in entry and "status" not in entry:
            raise ValueError(f"{path}: entry {key!r} needs 'metrics' or 'status'")
        unknown = set(entry) - {"source", "scale", "scales", "metrics", "status", "notes"}
        if unknown:
            raise ValueError(f"{path}: entry {key!r} has unknown field(s) {sorted(unknown)}")
        scale = entry.get("scale", 1)
        scales = entry.get("scales") or {}
        for name, s in [("scale", scale)] + [(f"scales.{m}", v) for m, v in scales.items()]:
            if isinstance(s, bool) or not isinstance(s, (int, float)) or s <= 0:
                raise ValueError(f"{path}: entry {key!r}: {name} must be a positive number, got {s!r}")
        if "metrics" in entry:
            try:
                _clean(entry["metrics"])
            except (TypeError, ValueError) as err:
                raise ValueError(f"{path}: entry {key!r}: {err}") from err
        out[key] = dict(entry, _file=str(path))
    return out


def published_entry(results: Mapping, root=None, published_path=None) -> tuple[dict | None, list[str]]:
    """Find the published entry for a results dict: (<repo>/<method>/published.yaml)[published_key].

    Returns (entry or None, problems) — problems say why no entry was found (shown in the report).
    """
    path = Path(published_path) if published_path else Path(root or repo_root()) / results["method"] / "published.yaml"
    key = results.get("published_key")
    if not path.is_file():
        return None, [f"no published table for method {results['method']!r} ({path} not found)"]
    table = load_published(path)
    if not key:
        return None, [f"results.json names no published_key (keys in {path.name}: {', '.join(table) or 'none'})"]
    if key not in table:
        return None, [f"published key {key!r} not in {path} (keys: {', '.join(table) or 'none'})"]
    return table[key], []


# ------------------------------------------------------------------------------------------ comparison
def _flatten(tree, prefix=()) -> dict[tuple[str, str], Any]:
    out: dict[tuple[str, str], Any] = {}
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            if isinstance(v, Mapping):
                out.update(_flatten(v, prefix + (str(k),)))
            else:
                path = prefix + (str(k),)
                out[("/".join(path[:-1]), path[-1]) if len(path) > 1 else (path[0], "")] = v
    return out


def compare(results: Mapping, published: Mapping | None) -> pd.DataFrame:
    """Rows (metric, class); columns ours, published, delta — numbers as fractions, or a string saying why not.

    ``published``: a published entry, a whole published.yaml mapping (the entry is picked by
    ``results["published_key"]``), or None.
    """
    problems: list[str] = []
    entry = published
    if entry is not None and "metrics" not in entry and "status" not in entry:
        key = results.get("published_key")
        entry = entry.get(key) if key else None
        if entry is None:
            problems.append(f"published key {key!r} not found")
    ours = _flatten(results.get("metrics", {}))
    pub_raw: dict = {}
    missing_pub = NOT_AVAILABLE
    scale, scales = 1, {}
    if entry is not None:
        scale, scales = entry.get("scale", 1), entry.get("scales") or {}
        if "metrics" in entry:
            pub_raw = _flatten(entry["metrics"])
        elif entry.get("status"):
            missing_pub = str(entry["status"])
    pub = {}
    for (metric, row), v in pub_raw.items():
        top = metric.split("/")[0]
        s = scales.get(metric, scales.get(top, scale))
        pub[(metric, row)] = None if v is None else float(v) / s
    # published-only rows (a class we have no number for) sit with their metric, not after every other metric
    all_rows = list(ours) + [k for k in pub if k not in ours]
    rows = [k for metric in dict.fromkeys(m for m, _ in all_rows) for k in all_rows if k[0] == metric]
    records = []
    for key in rows:
        o = ours.get(key, NOT_AVAILABLE)
        if key in ours and o is None:
            o = float("nan")
        p = pub.get(key, NOT_AVAILABLE if pub_raw else missing_pub)
        if key in pub and p is None:
            p = NOT_AVAILABLE
        d = (o - p) if isinstance(o, (int, float)) and isinstance(p, (int, float)) and not math.isnan(o) \
            else NOT_AVAILABLE
        records.append((key[0], key[1], o, p, d))
    df = pd.DataFrame.from_records(records, columns=["metric", "class", "ours", "published", "delta"])
    df = df.set_index(["metric", "class"])
    df = df.astype(object)
    df.attrs.update(source=(entry or {}).get("source"), status=(entry or {}).get("status"), scale=scale,
                    published_key=results.get("published_key"), problems=problems)
    return df


def _fmt(v, signed=False) -> str:
    if isinstance(v, str):
        return v
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "NaN"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def _table_lines(df: pd.DataFrame) -> list[str]:
    lines = ["| metric | class | ours | published | delta |", "|---|---|---|---|---|"]
    for (metric, row), r in df.iterrows():
        lines.append(f"| {metric} | {row} | {_fmt(r['ours'])} | {_fmt(r['published'])} | {_fmt(r['delta'], True)} |")
    return lines


def _published_line(results: Mapping, df: pd.DataFrame, extra: Sequence[str] = ()) -> str:
    key = results.get("published_key")
    src = df.attrs.get("source")
    parts = [f"published: `{key}`" if key else "published: none named"]
    if src:
        parts.append(f"source: {src}")
    if df.attrs.get("status"):
        parts.append(f"status: {df.attrs['status']}")
    elif src and df.attrs.get("scale", 1) != 1:
        parts.append(f"published values / {df.attrs['scale']:g} -> fractions")
    parts += list(df.attrs.get("problems", [])) + list(extra)
    return " — ".join(parts)


def render_markdown(results: Mapping, df: pd.DataFrame, run_dir=None, plot_name: str | None = None,
                    problems: Sequence[str] = ()) -> str:
    lines = [f"# {results['method']} / {results['config']}", ""]
    if run_dir is not None:
        lines.append(f"- run: `{run_dir}`")
    lines.append(f"- {_published_line(results, df, problems)}")
    lines.append("- values are fractions; delta = ours - published; 'not available' = no number to compare")
    for note in results.get("notes", []):
        lines.append(f"- note: {note}")
    lines += [""] + _table_lines(df)
    if plot_name:
        lines += ["", f"![ours vs published]({plot_name})"]
    return "\n".join(lines) + "\n"


def _isnum(v) -> bool:
    return isinstance(v, (int, float)) and not math.isnan(v)


def draw_comparison_panel(ax, panel: str, items: Sequence[tuple]) -> None:
    """One panel of report.png: (label, ours, published) bars; a missing published number says "not available"."""
    import numpy as np

    x = np.arange(len(items))
    has_pub = [_isnum(p) for _, _, p in items]
    shift = 0.2 if any(has_pub) else 0.0   # no published column: ours sits centred on its label
    ax.bar(x - shift, [o if _isnum(o) else np.nan for _, o, _ in items], 0.4, label="ours", color="#1f77b4")
    if any(has_pub):   # published bars only where the paper gives a number
        ax.bar(x[has_pub] + 0.2, [p for _, _, p in items if _isnum(p)], 0.4, label="published", color="#ff7f0e")
        for xi in x[[not h for h in has_pub]]:
            ax.text(xi + 0.2, 0, "not available", ha="center", va="bottom", fontsize=7, rotation=90)
    # said in the title, where no bar can hide it
    ax.set_title(panel if any(has_pub) else f"{panel}  (published: not available)", fontsize=10)
    ax.set_xlim(-0.7, len(items) - 0.3)   # a one-bar panel keeps normal-width bars
    ax.set_xticks(x)
    ax.set_xticklabels([lab for lab, _, _ in items], rotation=35, ha="right", fontsize=8)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def plot_comparison(df: pd.DataFrame, path, title: str = "") -> Path | None:
    """Grouped bars, ours vs published, one panel per metric (rows with a number in ``ours``). Agg backend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list] = {}
    for (metric, row), r in df.iterrows():
        if _isnum(r["ours"]) or _isnum(r["published"]):
            panel, label = (metric, row) if row else ("(scalar metrics)", metric)
            groups.setdefault(panel, []).append((label, r["ours"], r["published"]))
    if not groups:
        return None
    panels = list(groups.items())[:16]
    # constrained layout keeps the suptitle, panel titles, rotated labels and outside legends from overlapping
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6, 0.6 * max(len(g) for _, g in panels) + 3),
                                                      2.8 * len(panels) + (0.4 if title else 0)),
                             squeeze=False, layout="constrained")
    for ax, (panel, items) in zip(axes[:, 0], panels):
        draw_comparison_panel(ax, panel, items)
    if title:
        fig.suptitle(title)
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
    return path


def report_run(run_dir, root=None, published_path=None, plot: bool = True) -> str:
    """Compare one run with its published entry; write report.md (+ report.png) into the run; return the text."""
    run_dir = Path(run_dir)
    results = read_results(run_dir)
    entry, problems = published_entry(results, root=root, published_path=published_path)
    df = compare(results, entry)
    plot_name = None
    if plot and plot_comparison(df, run_dir / PLOT_FILE, f"{results['method']} / {results['config']}"):
        plot_name = PLOT_FILE
    text = render_markdown(results, df, run_dir=run_dir, plot_name=plot_name, problems=problems)
    _atomic_write(run_dir / REPORT_FILE, text)
    return text


def _headline(results: Mapping, df: pd.DataFrame) -> pd.DataFrame:
    if results.get("headline"):
        want = [tuple(h) for h in results["headline"]]
        keep = [k for k in want if k in df.index]
        missing = [k for k in want if k not in df.index]
        out = df.loc[keep] if keep else df.iloc[:0]
        if missing:
            extra = pd.DataFrame([(m, r, NOT_AVAILABLE, NOT_AVAILABLE, NOT_AVAILABLE) for m, r in missing],
                                 columns=["metric", "class", "ours", "published", "delta"]).set_index(["metric", "class"])
            out = pd.concat([out, extra])
        return out
    mask = [(row == "" or row in SUMMARY_ROWS) for _, row in df.index]
    return df[mask] if any(mask) else df


def aggregate(runs_root, out=None, root=None) -> str:
    """One markdown document: per method/config, the latest finished run's headline rows vs published."""
    runs_root = Path(runs_root)
    found = sorted(runs_root.rglob(RESULTS_FILE)) if runs_root.is_dir() else []
    groups: dict[tuple[str, str], list[dict]] = {}
    for path in found:
        res = read_results(path)
        groups.setdefault((res["method"], res["config"]), []).append(res)
    lines = ["# Results: ours vs published", "",
             f"Every finished run under `{runs_root}` (a run directory with {RESULTS_FILE}); per method/config the "
             "latest run's headline numbers. Values are fractions; delta = ours - published; "
             "'not available' = no number to compare.", ""]
    if not groups:
        lines.append("No finished runs found.")
    for (method, config), runs in sorted(groups.items()):
        runs.sort(key=lambda r: Path(r["_path"]).parent.name)
        latest = runs[-1]
        entry, problems = published_entry(latest, root=root)
        df = _headline(latest, compare(latest, entry))
        run_dir = Path(latest["_path"]).parent
        lines += [f"## {method} / {config}", "", f"- run: `{run_dir}`"
                  + (f" (latest of {len(runs)} runs)" if len(runs) > 1 else ""),
                  f"- {_published_line(latest, df, problems)}"]
        lines += [f"- note: {n}" for n in latest.get("notes", [])]
        lines += [""] + _table_lines(df) + [""]
    text = "\n".join(lines).rstrip() + "\n"
    if out is not None:
        _atomic_write(Path(out), text)
    return text


def printed_path(path: str) -> str:
    """``path`` as typed, or under the repository root when only there: the CLIs run from the root and print run
    paths relative to it, so ``cd ham && python train.py`` prints a path this must find from ``ham/`` too."""
    if Path(path).is_absolute() or Path(path).exists() or not (repo_root() / path).exists():
        return path
    return str(repo_root() / path)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shared.report", description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", nargs="?", help="a run directory holding results.json")
    ap.add_argument("--all", metavar="RUNS", help="aggregate every finished run under RUNS")
    ap.add_argument("--out", default=None, help="with --all: markdown file to write (default RESULTS.md)")
    ap.add_argument("--published", default=None, help="published.yaml to use instead of <repo>/<method>/published.yaml")
    ap.add_argument("--repo-root", default=None, help="where <method>/published.yaml live (default: this repo)")
    ap.add_argument("--no-plot", action="store_true", help="skip the PNG bar plot")
    args = ap.parse_args(argv)
    if (args.run_dir is None) == (args.all is None):
        ap.error("give either RUN_DIR or --all RUNS")
    if args.all is None and args.out is not None:
        ap.error("--out goes with --all (a single run writes RUN_DIR/report.md)")
    if args.all is not None and args.published is not None:
        ap.error("--published goes with a single RUN_DIR (--all reads <repo>/<method>/published.yaml)")
    try:
        if args.all is not None:
            text = aggregate(args.all, args.out or "RESULTS.md", root=args.repo_root)
        else:
            text = report_run(printed_path(args.run_dir), root=args.repo_root, published_path=args.published,
                              plot=not args.no_plot)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
