"""``make demo``: the synthetic twin, a picture of it, then every method's own demo (those that exist).

    python -m shared.demo --data data/synthetic --out demo_out [--n 200] [--size 256] [--methods adnet ham]

1. Writes the synthetic twin of every layout to ``<data>/<folder>/``, named as a real DATA root names them
   (``synthetic.DATA_FOLDERS``: nih, chexpert, mimic-cxr-jpg, chest-imagenome, openi; so ``make reproduce-...
   DATA=data/synthetic SMOKE=1`` reads them),
   reusing a layout that is already complete with the same parameters (a twin with other parameters there is
   replaced, not overwritten file by file). The method demos read these twins (HAM and CXR-CLIP keep their own,
   smaller ones in ``<data>/ham_nih`` and ``<data>/cxrclip_mimic``), so no twin is written twice.
2. Writes ``<out>/contact_sheet.png``: images of each layout with their true lesion boxes and labels, and
   ``<out>/anatomy.png``: one image with its 18 ImaGenome anatomy boxes.
3. For each method (adnet, ham, agcnn, chextriev, cxrclip): if the method has a ``demo`` module
   (``<method>/demo.py``, found without importing the method), empties ``<out>/<method>`` (a second ``make demo``
   reruns from scratch) and runs ``python -m <method>.demo --data <data> --out <out>/<method>`` in a subprocess, streams its output and shows its summary (``<out>/<method>/summary.md``
   when the demo writes one — its first line is the headline shown in the final table — else the last lines it
   printed); otherwise prints "<method>: not implemented yet".
4. Ends with a table of what ran (whole headlines), then where the pictures and pages are. Exit status 1 when a method's demo failed, else 0.

``shared`` never imports method code: the demos run as separate processes.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

import cv2
import numpy as np

from shared.data import synthetic

METHODS = ("adnet", "ham", "agcnn", "chextriev", "cxrclip")
REPO = Path(__file__).resolve().parents[1]
SUMMARY_FILE = "summary.md"   # a method demo's OUT/summary.md; its first line is the headline of the final table
_TILE = 256
_COLORS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
           (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0)]


def finding_color(name: str) -> tuple:
    """An RGB colour per finding (stable across images)."""
    names = synthetic.FINDINGS
    return _COLORS[names.index(name) % len(_COLORS)] if name in names else (255, 255, 255)


# --------------------------------------------------------------------------------------------- data
def fresh_twin(root: Path, layout: str, n: int, size: int, seed: int, workers: int = 1, log=print) -> bool:
    """Make ``root`` hold the ``layout`` twin with exactly these parameters; True when it had to be written.

    A complete twin with these parameters is reused. Another synthetic twin there (it has ``.complete`` or
    ``truth.json``) is removed first, so that none of its images stay behind unlisted next to the new index; a
    folder that is not a synthetic twin is never removed (the new files are written into it).
    """
    root = Path(root)
    if synthetic.is_complete(root, layout, n, size, seed):
        return False
    if root.is_dir() and ((root / ".complete").is_file() or (root / "truth.json").is_file()):
        shutil.rmtree(root)
    t = time.perf_counter()
    synthetic.generate(layout, root, n=n, size=size, seed=seed, workers=workers)
    log(f"twin {layout}: wrote {n} images at {size} px to {root} ({time.perf_counter() - t:.1f} s)")
    return True


def ensure_twins(data: Path, n: int, size: int, seed: int, layouts=synthetic.LAYOUTS, log=print) -> dict:
    """{layout: root}, generating (see :func:`fresh_twin`) the layouts not already complete with these parameters."""
    roots = {}
    for layout in layouts:
        root = data / synthetic.DATA_FOLDERS[layout]
        if not fresh_twin(root, layout, n, size, seed, workers=min(4, os.cpu_count() or 1), log=log):
            log(f"twin {layout}: reusing {root}")
        roots[layout] = root
    return roots


# --------------------------------------------------------------------------------------------- pictures
def _tile(root: Path, rec: dict, boxes=True, anatomy=False, caption=None) -> np.ndarray:
    from shared.data.images import load_image
    img = load_image(root / rec["path"])
    h, w = img.shape
    s = _TILE / max(h, w)
    small = cv2.resize(img, (max(1, int(round(w * s))), max(1, int(round(h * s)))), interpolation=cv2.INTER_AREA)
    tile = np.zeros((_TILE, _TILE, 3), np.uint8)
    tile[:small.shape[0], :small.shape[1]] = small[..., None]
    if anatomy:
        for k, (name, (x, y, bw, bh)) in enumerate(rec.get("anatomy", {}).items()):
            c = _COLORS[k % len(_COLORS)]
            cv2.rectangle(tile, (int(x * s), int(y * s)), (int((x + bw) * s), int((y + bh) * s)), c, 1)
    if boxes:
        for les in rec["lesions"]:
            x, y, bw, bh = les["box"]
            c = finding_color(les["finding"])
            p0, p1 = (int(x * s), int(y * s)), (int((x + bw) * s), int((y + bh) * s))
            cv2.rectangle(tile, p0, p1, c, 2)
            cv2.putText(tile, les["finding"][:12], (p0[0] + 2, max(10, p0[1] - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.38,
                        c, 1, cv2.LINE_AA)
    text = caption if caption is not None else (", ".join(rec["findings"]) or "No Finding")
    lines = _wrap(text, 40)[:2]
    if lines:
        tile[_TILE - 8 - 14 * len(lines):, :] //= 4   # darken behind the caption
    for i, line in enumerate(lines):
        y = _TILE - 8 - 14 * (len(lines) - 1 - i)
        cv2.putText(tile, line, (4, y), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def _wrap(text: str, width: int) -> list:
    out, line = [], ""
    for word in text.split():
        if len(line) + len(word) + 1 > width and line:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return out + ([line] if line else [])


def _label_strip(text: str, width: int) -> np.ndarray:
    strip = np.full((26, width, 3), 40, np.uint8)
    cv2.putText(strip, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return strip


def _pick(truth: dict, k: int, lateral: bool = False) -> list:
    """Up to k records: images whose lesions add findings not shown yet, then other abnormal ones, the messy
    ones, at most two normal ones (and one lateral view when ``lateral``)."""
    recs = [r for r in truth.values() if r["view"] == "frontal"]
    chosen, seen = [], set()
    reserve = 2 + int(lateral)
    for r in recs:
        new = {l["finding"] for l in r["lesions"]} - seen
        if new and len(chosen) < k - reserve:
            chosen.append(r)
            seen |= new
    messy = [r for r in recs if r["messy"] and r not in chosen]
    normal = [r for r in recs if not r["findings"] and r not in chosen][:2]
    others = [r for r in recs if r["lesions"] and r not in chosen]
    lat = [r for r in truth.values() if r["view"] == "lateral"][:1] if lateral else []
    for group in (messy[:2], lat, normal, others, messy[2:]):
        for r in group:
            if len(chosen) < k and r not in chosen:
                chosen.append(r)
    return chosen[:k]


def contact_sheet(roots: dict, out_png: Path, cols: int = 6) -> Path:
    """One PNG: per layout a labelled strip and rows of images with their true boxes (NIH gets 3 rows)."""
    blocks = []
    width = cols * _TILE
    for layout, root in roots.items():
        truth = json.loads((root / "truth.json").read_text())
        rows = 3 if layout == "nih" else 1
        recs = _pick(truth, rows * cols, lateral=layout == "chexpert")
        tiles = []
        for r in recs:
            caption = None
            if layout in ("mimic", "imagenome", "openi") and r.get("report"):
                caption = r["report"]["impression"]
            if r["messy"]:
                caption = f"[{r['messy']}] " + (caption or ", ".join(r["findings"]) or "No Finding")
            if r["view"] == "lateral":
                caption = "[lateral view] " + (", ".join(r["findings"]) or "No Finding")
            tiles.append(_tile(root, r, anatomy=layout == "imagenome", caption=caption))
        while len(tiles) % cols:
            tiles.append(np.zeros((_TILE, _TILE, 3), np.uint8))
        grid = np.vstack([np.hstack(tiles[i:i + cols]) for i in range(0, len(tiles), cols)])
        what = ("18 anatomy boxes (thin) + lesion boxes; caption = report impression" if layout == "imagenome"
                else "true lesion boxes; caption = findings" + (" or report impression"
                                                                 if layout in ("mimic", "openi") else ""))
        blocks += [_label_strip(f"{layout}: {root}  ({what})", width), grid]
    sheet = np.vstack(blocks)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_png), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return out_png


def anatomy_sheet(root: Path, out_png: Path) -> Path:
    """One image with its 18 anatomy boxes (left) and its lesions (right), with a colour legend."""
    truth = json.loads((root / "truth.json").read_text())
    rec = next((r for r in truth.values() if r["view"] == "frontal" and len(r["lesions"]) >= 2 and not r["messy"]),
               next(r for r in truth.values() if r["view"] == "frontal"))
    left = _tile(root, rec, boxes=False, anatomy=True, caption="18 ImaGenome anatomy boxes")
    right = _tile(root, rec, boxes=True, anatomy=False)
    legend = np.full((_TILE, _TILE, 3), 30, np.uint8)
    for k, name in enumerate(rec["anatomy"]):
        cv2.putText(legend, name, (6, 13 + 13 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.38, _COLORS[k % len(_COLORS)], 1,
                    cv2.LINE_AA)
    sheet = np.hstack([left, right, legend])
    cv2.imwrite(str(out_png), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return out_png


# --------------------------------------------------------------------------------------------- methods
def find_demo(method: str) -> Path | None:
    """The file of ``<method>.demo`` if it exists, found WITHOUT importing the method package."""
    spec = importlib.util.find_spec(method) if method.isidentifier() else None   # top level: not imported
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        for cand in (Path(loc) / "demo.py", Path(loc) / "demo" / "__init__.py"):
            if cand.is_file():
                return cand
    return None


def write_summary(out: str | Path, lines: list[str], echo: bool = True) -> Path:
    """A method demo's OUT/summary.md (headline first; ``make demo`` shows that line), printed too with ``echo``."""
    path = Path(out) / SUMMARY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    if echo:
        print("\n".join(lines))
    return path


def run_method_demo(method: str, data: Path, out: Path, timeout: float | None, log=print) -> dict:
    """Run ``python -m <method>.demo --data DATA --out OUT/<method>``; stream its output; return a summary.

    OUT/<method> is emptied first: a second ``make demo`` reruns from scratch instead of resuming a finished run."""
    mout = out / method
    shutil.rmtree(mout, ignore_errors=True)
    mout.mkdir(parents=True)
    cmd = [sys.executable, "-m", f"{method}.demo", "--data", str(data), "--out", str(mout)]
    log(f"\n--- {method}: {' '.join(cmd)}")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                       if p])
    tail = deque(maxlen=15)
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1)
    lines: queue.Queue = queue.Queue()

    def pump():   # a thread reads the output, so a demo that hangs silently still meets the timeout
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    timed_out = False
    try:
        while True:
            left = None if not timeout else timeout - (time.perf_counter() - t)
            if left is not None and left <= 0:
                timed_out = True
                proc.kill()
                break
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                break
            tail.append(line)
            log(f"  {method} | {line}")
        rc = proc.wait(timeout=60)
    except KeyboardInterrupt:
        proc.kill()
        raise
    dt = time.perf_counter() - t
    summary_file = mout / SUMMARY_FILE
    summary = summary_file.read_text().strip() if summary_file.is_file() else "\n".join(tail)
    status = "ok" if rc == 0 and not timed_out else ("timed out" if timed_out else f"failed (exit {rc})")
    log(f"--- {method}: {status} in {dt:.0f} s; summary:\n" + "\n".join("    " + s for s in summary.splitlines()))
    first = next((s.strip() for s in summary.splitlines() if s.strip()), "")
    return {"method": method, "status": status, "seconds": round(dt, 1), "summary": first, "out": str(mout)}


def closing_table(results: list, pictures: list) -> str:
    """The table ``make demo`` ends with: full summaries (never cut), then where the pictures and pages are."""
    rows = ["", "| method | status | seconds | summary |", "|---|---|---|---|"]
    rows += [f"| {r['method']} | {r['status']} | {r['seconds']:.0f} | {r['summary']} |" for r in results]
    rows += ["", "Pictures and pages:"] + [f"  {p}" for p in pictures]
    for r in results:
        if r["out"]:
            found = sorted(q for q in Path(r["out"]).rglob("*") if q.suffix in (".png", ".html", ".md"))
            shown = [str(q) for q in found if q.parent.name != "overlays"]
            overlays = {str(q.parent) for q in found if q.parent.name == "overlays"}
            rows += [f"  {r['method']}: {r['out']}"] + [f"    {q}" for q in shown + sorted(overlays)]
    return "\n".join(rows)


def run(data, out, n: int = 200, size: int = 256, seed: int = 0, methods=METHODS, timeout: float | None = 1800,
        log=print) -> list:
    """The whole demo (see the module docstring); returns one summary dict per method."""
    data, out = Path(data), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    roots = ensure_twins(data, n, size, seed, log=log)
    sheet = contact_sheet(roots, out / "contact_sheet.png")
    anat = anatomy_sheet(roots["imagenome"], out / "anatomy.png")
    log(f"contact sheet: {sheet}\nanatomy boxes: {anat}")
    results = []
    for m in methods:
        if find_demo(m) is None:
            log(f"{m}: not implemented yet")
            results.append({"method": m, "status": "not implemented yet", "seconds": 0.0, "summary": "",
                            "out": ""})
        else:
            results.append(run_method_demo(m, data, out, timeout, log=log))
    log(closing_table(results, [sheet, anat]))
    (out / "demo_summary.json").write_text(json.dumps({"data": str(data), "n": n, "size": size, "seed": seed,
                                                       "contact_sheet": str(sheet), "methods": results},
                                                      indent=1) + "\n")
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m shared.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="data/synthetic", help="where the synthetic twin layouts go (reused)")
    p.add_argument("--out", default="demo_out")
    p.add_argument("--n", type=int, default=200, help="images per layout")
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", nargs="*", default=list(METHODS), help="methods to run (default: all five)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per method demo")
    p.add_argument("--twins-only", action="store_true", help="only write the twins (make twin), no pictures or demos")
    a = p.parse_args(argv)
    if a.twins_only:
        ensure_twins(Path(a.data), a.n, a.size, a.seed)
        return 0
    results = run(a.data, a.out, a.n, a.size, a.seed, a.methods, a.timeout)
    return 1 if any(r["status"] not in ("ok", "not implemented yet") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
