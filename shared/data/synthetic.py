"""The synthetic twin: small, seeded datasets written in the REAL on-disk layouts (NIH, CheXpert, MIMIC-CXR-JPG,
Chest ImaGenome, OpenI), whose findings are real, learnable and localised image patterns.

    from shared.data.synthetic import generate
    root = generate("nih", "data/synthetic/nih", n=200, size=128, seed=0)
    # python -m shared.data.synthetic --layout nih --out data/synthetic/nih --n 200 --size 128 --seed 0

What is drawn. Every image is a chest-like radiograph: a body, two dark lung fields with ribs and vessel texture, a
bright mediastinum, trachea and heart, a little blur and noise. Each finding is its OWN pattern at its OWN
anatomical place (see ``FINDINGS``):

==================  ===========================================================  ============================
finding             pattern                                                      place
==================  ===========================================================  ============================
Cardiomegaly        the heart silhouette drawn ~1.6x wider                        cardiac silhouette
Effusion            bright band with a meniscus filling the lung base             one costophrenic angle/base
Nodule              small bright disk                                            anywhere in a lung
Mass                larger bright disk                                           upper/mid lung
Pneumothorax        very dark apical region without lung texture + pleural line  one apex
Atelectasis         bright thick oblique plate-like line                         one lower zone
Infiltration        bright patchy blotches                                       one mid zone
Consolidation       dense homogeneous lobulated patch with dark air bronchograms lower zone, medial half
Pneumonia           fine bright granular speckle                                 one upper zone
Edema               bilateral perihilar (bat-wing) haze                          both hila
Emphysema           hyperlucent lungs without texture, flattened diaphragms      both lungs (no box)
Fibrosis            reticular (net-like) lines                                   both lower zones
Pleural_Thickening  bright rim along the lateral chest wall                      one upper lateral wall
Hernia              round retrocardiac lucency with an air-fluid level           below the heart
Enlarged_CM         widened upper mediastinum                                    upper mediastinum
Fracture            bright rib callus with a dark fracture gap                   one lateral chest wall
Support_Devices     bright tube down the trachea + a central line                trachea / right upper chest
==================  ===========================================================  ============================

NIH draws the 14 NIH findings; CheXpert, MIMIC, ImaGenome and OpenI draw the findings their label sets name
(``LAYOUT_FINDINGS``). About 40% of frontal images have no finding; the others 1-4 findings, each finding in
~8-15% of the images. Lateral views (CheXpert, MIMIC, OpenI) are lateral-looking images showing the study's
heart size and effusions.

What is written (the real layouts; the readers in ``shared.data`` read them with no special path):

- ``nih``: Data_Entry_2017.csv (real header, OriginalImage[Width,Height] as two columns), BBox_List_2017.csv
  (true lesion boxes in pixels of the written image, for about half of the images having one of NIH's 8 box
  labels; "Infiltrate" spelling; the real file's header with its 3 empty columns), train_val_list.txt /
  test_list.txt (patient-disjoint, ~80/20, no final newline like the real files), images/*.png.
- ``chexpert``: CheXpert-v1.0-small/{train,valid}.csv (Path, Sex, Age, Frontal/Lateral, AP/PA, 14 labels with
  1.0/0.0/-1.0/blank; valid has no blanks and no -1) and the JPEGs the Path column names; also
  CheXpert-v1.0-small/BBoxes.json, the training images' true boxes in HAM's CheXpert box format, with the image
  size they refer to in box_sizes.csv (HAM's ``data.box_sizes``).
- ``mimic``: mimic-cxr-2.0.0-{chexpert,negbio,split,metadata}.csv, files/pXX/pSUBJECT/sSTUDY/<dicom_id>.jpg and
  the reports files/pXX/pSUBJECT/sSTUDY.txt (FINDINGS: / IMPRESSION:). Labels agree with the report sentences
  (positive -> 1.0, "possible ..." -> -1.0, "no ..." -> 0.0, not mentioned -> blank). Also testSet_SubjID.csv
  (CheXclusion's test-subject list, ADNet's MIMIC test set): the twin's official test subjects.
- ``imagenome``: the ``mimic`` layout plus silver/scene_graph/<dicom_id>_SceneGraph.json for each frontal image
  (18 anatomy objects with x1..y2/width/height at 224 scale and original_x1..y2 in written pixels; attributes
  "anatomicalfinding|yes|lung opacity"-style strings, including "|no|" ones).
- ``openi``: ecgen-radiology/<k>.xml (NLMCXR-style, AbstractText Label="FINDINGS"/"IMPRESSION", parentImage ids)
  and images/<parentImage id>.png.

Next to the data: README.txt (what is messy, on purpose), messy.json ({kind: relative path}), truth.json (every
image's findings, lesion boxes and 18 anatomy boxes in written pixels, for tests) and .complete (the parameters,
written last: a directory with a matching .complete is complete).

Messy on purpose (where the format allows): ``rgba`` an RGBA PNG (gray in RGB, alpha 255), ``16bit`` a 16-bit PNG
(value * 257, so >> 8 or / 257 gives the 8-bit image), ``nonsquare`` an image 1.25x taller than wide, ``exif`` a
JPEG whose stored pixels are rotated, with an EXIF Orientation tag (6) so that PIL.ImageOps.exif_transpose restores
the upright image. Deterministic: the same (layout, n, size, seed) writes the same bytes.
"""
from __future__ import annotations

import argparse
import io
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from shared.data.labels import (CHEXPERT_LABELS, IMAGENOME_ANATOMIES, IMAGENOME_FINDINGS, MIMIC_LABELS,
                                NIH_LABELS)

LAYOUTS = ("nih", "chexpert", "mimic", "imagenome", "openi")
# The folder each layout gets under a DATA root: the names the reproduce targets expect (`make ... DATA=D`), so a
# folder of twins (`make twin`, `make demo`) stands in for a folder of the real datasets.
DATA_FOLDERS = {"nih": "nih", "chexpert": "chexpert", "mimic": "mimic-cxr-jpg", "imagenome": "chest-imagenome",
                "openi": "openi"}
_LAYOUT_CODE = {"nih": 1, "chexpert": 2, "mimic": 3, "imagenome": 3, "openi": 5}  # imagenome = mimic images

# Internal finding names. NIH's 14 are NIH's spelling; the last three exist for the CheXpert-style label sets.
FINDINGS = NIH_LABELS + ["Enlarged_CM", "Fracture", "Support_Devices"]
LAYOUT_FINDINGS = {
    "nih": list(NIH_LABELS),
    "chexpert": ["Cardiomegaly", "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Effusion",
                 "Pleural_Thickening", "Nodule", "Mass", "Infiltration", "Enlarged_CM", "Fracture", "Support_Devices"],
}
LAYOUT_FINDINGS["mimic"] = LAYOUT_FINDINGS["imagenome"] = LAYOUT_FINDINGS["openi"] = LAYOUT_FINDINGS["chexpert"]

# NIH's box list has 8 labels; "Infiltration" is spelled "Infiltrate" there.
NIH_BOX_LABELS = {"Atelectasis": "Atelectasis", "Cardiomegaly": "Cardiomegaly", "Effusion": "Effusion",
                  "Infiltration": "Infiltrate", "Mass": "Mass", "Nodule": "Nodule", "Pneumonia": "Pneumonia",
                  "Pneumothorax": "Pneumothorax"}
# CheXpert / MIMIC label -> the internal findings that make it positive (No Finding: none of the pathologies).
CHEXPERT_FROM_FINDINGS = {
    "Enlarged Cardiomediastinum": ["Enlarged_CM"], "Cardiomegaly": ["Cardiomegaly"],
    "Lung Opacity": ["Infiltration", "Consolidation", "Pneumonia"], "Lung Lesion": ["Nodule", "Mass"],
    "Edema": ["Edema"], "Consolidation": ["Consolidation"], "Pneumonia": ["Pneumonia"],
    "Atelectasis": ["Atelectasis"], "Pneumothorax": ["Pneumothorax"], "Pleural Effusion": ["Effusion"],
    "Pleural Other": ["Pleural_Thickening"], "Fracture": ["Fracture"], "Support Devices": ["Support_Devices"],
}
# ImaGenome finding -> (category, internal findings). "fluid overload/heart failure" = Edema with Cardiomegaly.
IMAGENOME_FROM_FINDINGS = {
    "lung opacity": ("anatomicalfinding", ["Infiltration", "Consolidation", "Pneumonia", "Atelectasis", "Edema",
                                           "Mass", "Nodule"]),
    "pleural effusion": ("anatomicalfinding", ["Effusion"]),
    "atelectasis": ("anatomicalfinding", ["Atelectasis"]),
    "enlarged cardiac silhouette": ("anatomicalfinding", ["Cardiomegaly"]),
    "pulmonary edema/hazy opacity": ("anatomicalfinding", ["Edema"]),
    "pneumothorax": ("anatomicalfinding", ["Pneumothorax"]),
    "consolidation": ("anatomicalfinding", ["Consolidation"]),
    "fluid overload/heart failure": ("disease", ["Edema"]),   # only when Cardiomegaly is also present
    "pneumonia": ("disease", ["Pneumonia"]),
}
NO_FINDING_FRACTION = 0.4
_N_FINDINGS_P = (0.30, 0.35, 0.25, 0.10)   # 1..4 findings in an abnormal image


# ==================================================================================================== geometry
@dataclass
class Geometry:
    """One image's anatomy in normalised coordinates (u = x / W, v = y / H; patient's right = image left)."""
    lungs: dict                     # side "R"/"L" -> (cx, cy, ax, ay) of the lung superellipse
    heart: tuple                    # (cx, cy, ax, ay)
    mediastinum: tuple              # (x0, y0, x1, y1)
    upper_mediastinum: tuple
    trachea: tuple
    emphysema: bool = False

    def lung_box(self, side):
        cx, cy, ax, ay = self.lungs[side]
        return (cx - ax, cy - ay, cx + ax, cy + ay)

    def zone(self, side, name):
        """Box (x0, y0, x1, y1) of a lung sub-region, as fractions of the lung box."""
        x0, y0, x1, y1 = self.lung_box(side)
        w, h = x1 - x0, y1 - y0
        fy = {"apical": (0.0, 0.2), "upper": (0.12, 0.42), "mid": (0.38, 0.66), "lower": (0.62, 1.0),
              "hilar": (0.36, 0.62), "cp": (0.80, 1.02)}[name]
        # medial = towards the midline: image right for the right lung (side R), image left for L
        if name == "hilar":
            fx = (0.62, 0.98) if side == "R" else (0.02, 0.38)
        elif name == "cp":
            fx = (-0.02, 0.42) if side == "R" else (0.58, 1.02)
        else:
            fx = (0.0, 1.0)
        return (x0 + fx[0] * w, y0 + fy[0] * h, x0 + fx[1] * w, y0 + fy[1] * h)

    def anatomy_boxes(self) -> dict:
        """The 18 ImaGenome anatomies -> normalised (x0, y0, x1, y1)."""
        out = {}
        for side, word in (("R", "right"), ("L", "left")):
            out[f"{word} lung"] = self.lung_box(side)
            out[f"{word} apical zone"] = self.zone(side, "apical")
            out[f"{word} upper lung zone"] = self.zone(side, "upper")
            out[f"{word} mid lung zone"] = self.zone(side, "mid")
            out[f"{word} lower lung zone"] = self.zone(side, "lower")
            out[f"{word} hilar structures"] = self.zone(side, "hilar")
            out[f"{word} costophrenic angle"] = self.zone(side, "cp")
        hx, hy, hax, hay = self.heart
        out["mediastinum"] = (self.mediastinum[0], self.mediastinum[1], max(self.mediastinum[2], hx + hax),
                              hy + hay)
        out["upper mediastinum"] = self.upper_mediastinum
        out["cardiac silhouette"] = (hx - hax, hy - hay, hx + hax, hy + hay)
        out["trachea"] = self.trachea
        return {k: out[k] for k in IMAGENOME_ANATOMIES}


def _make_geometry(rng, findings) -> Geometry:
    s = rng.uniform(0.96, 1.04)
    dx, dy = rng.uniform(-0.02, 0.02, size=2)

    def t(u, v):
        return 0.5 + s * (u - 0.5) + dx, 0.5 + s * (v - 0.5) + dy

    emph = "Emphysema" in findings
    lungs = {}
    for side, cx0 in (("R", 0.30), ("L", 0.70)):
        cx, cy = t(cx0 + rng.uniform(-0.01, 0.01), 0.49 + (0.03 if emph else 0.0))
        lungs[side] = (cx, cy, s * 0.165 * rng.uniform(0.97, 1.03), s * (0.36 if emph else 0.33))
    if "Cardiomegaly" in findings:
        hx, hy = t(0.555, 0.655)
        heart = (hx, hy, s * 0.195, s * 0.15)
    else:
        hx, hy = t(0.545, 0.665)
        heart = (hx, hy, s * 0.115 * rng.uniform(0.95, 1.05), s * 0.115)
    half = 0.12 if "Enlarged_CM" in findings else 0.065
    mx0, my0 = t(0.5 - half, 0.13)
    mx1, my1 = t(0.5 + half, 0.43)
    med0 = t(0.44, 0.13)
    med1 = t(0.56, 0.70)
    tr0 = t(0.483, 0.04)
    tr1 = t(0.517, 0.38)
    return Geometry(lungs=lungs, heart=heart, mediastinum=(med0[0], med0[1], med1[0], med1[1]),
                    upper_mediastinum=(mx0, my0, mx1, my1), trachea=(tr0[0], tr0[1], tr1[0], tr1[1]),
                    emphysema=emph)


# ==================================================================================================== drawing
def _smooth_noise(rng, h, w, cell):
    gh, gw = max(2, h // cell + 2), max(2, w // cell + 2)
    return cv2.resize(rng.standard_normal((gh, gw)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)


def _ellipse(U, V, cx, cy, ax, ay, soft, p_top=2.0, p_bottom=2.0):
    """Soft mask of a (super)ellipse; exponent p_top above the centre, p_bottom below."""
    du = np.abs(U - cx) / ax
    dv = np.abs(V - cy) / ay
    p = np.where(V < cy, p_top, p_bottom) if p_top != p_bottom else p_top
    r = (du ** p + dv ** p) ** (1.0 / p)
    return np.clip((1.0 - r) / soft + 0.5, 0.0, 1.0).astype(np.float32)


def _box_mask(U, V, box, soft=0.004):
    x0, y0, x1, y1 = box
    m = np.clip((U - x0) / soft + 0.5, 0, 1) * np.clip((x1 - U) / soft + 0.5, 0, 1)
    return (m * np.clip((V - y0) / soft + 0.5, 0, 1) * np.clip((y1 - V) / soft + 0.5, 0, 1)).astype(np.float32)


def _segment(U, V, p0, p1, half_width):
    """Soft mask of a thick line segment between normalised points p0, p1 (distance in u units)."""
    (x0, y0), (x1, y1) = p0, p1
    dxy = np.array([x1 - x0, y1 - y0])
    L2 = float(dxy @ dxy) + 1e-12
    t = np.clip(((U - x0) * dxy[0] + (V - y0) * dxy[1]) / L2, 0, 1)
    d = np.hypot(U - (x0 + t * dxy[0]), V - (y0 + t * dxy[1]))
    return np.clip((half_width - d) / (0.35 * half_width) + 0.5, 0, 1).astype(np.float32)


@dataclass
class Lesion:
    finding: str
    side: str           # "R", "L", "B" (both) or "C" (central)
    box: tuple          # normalised (x0, y0, x1, y1)
    size: str = "moderate"


def _lung_point(rng, geom, side, ey_range=(-0.6, 0.3), ex_range=(-0.55, 0.55)):
    cx, cy, ax, ay = geom.lungs[side]
    for _ in range(50):
        ex, ey = rng.uniform(*ex_range), rng.uniform(*ey_range)
        if ex * ex + ey * ey < 0.5:
            break
    return cx + ex * ax, cy + ey * ay


def _draw_findings(img, U, V, lung_mask, geom: Geometry, findings, rng, aspect):
    """Add each finding's pattern to ``img`` (float32 in [0,1]); return the list of Lesion (with true boxes).

    ``aspect`` = H / W: distances are measured in u units, so a disk of radius r spans r*W pixels both ways.
    """
    lesions = []
    Va = V * aspect   # v in u units (so circles stay round on non-square images)
    H, W = img.shape

    def side_choice():
        return "R" if rng.random() < 0.5 else "L"

    def disk(cx, cy, r, amp, finding, side, size):
        m = _ellipse(U, Va, cx, cy * aspect, r, r, soft=0.25)
        img[:] += amp * m
        lesions.append(Lesion(finding, side, (cx - r, cy - r / aspect, cx + r, cy + r / aspect), size))

    # patterns that replace the pixels (pneumothorax, hernia) first, so additive lesions stay visible over them
    order = sorted(findings, key=lambda f: f not in ("Pneumothorax", "Hernia"))
    for f in order:
        if f == "Cardiomegaly":
            hx, hy, hax, hay = geom.heart
            lesions.append(Lesion(f, "C", (hx - hax, hy - hay, hx + hax, hy + hay)))
        elif f == "Emphysema":
            pass  # drawn through the background (hyperlucent, tall lungs)
        elif f == "Enlarged_CM":
            lesions.append(Lesion(f, "C", geom.upper_mediastinum))
        elif f == "Nodule":
            side = side_choice()
            cx, cy = _lung_point(rng, geom, side)
            disk(cx, cy, rng.uniform(0.022, 0.03), 0.42, f, side, "small")
        elif f == "Mass":
            side = side_choice()
            cx, cy = _lung_point(rng, geom, side, ey_range=(-0.5, 0.15), ex_range=(-0.35, 0.35))
            disk(cx, cy, rng.uniform(0.055, 0.075), 0.38, f, side, "large")
        elif f == "Effusion":
            sides = ["R", "L"] if rng.random() < 0.25 else [side_choice()]
            for side in sides:
                cx, cy, ax, ay = geom.lungs[side]
                frac = rng.uniform(0.62, 0.76)          # meniscus level as a fraction of lung height
                top = cy - ay + 2 * ay * frac
                lat = (cx - ax - U) / (2 * ax) if side == "R" else (U - cx - ax) / (2 * ax)  # 0 at lateral edge..
                lat = np.clip(-lat, 0, 1)               # 0 lateral .. 1 medial
                level = top + 0.06 * lat                 # meniscus: higher laterally
                m = np.clip((V - level) / 0.01 + 0.5, 0, 1) * _box_mask(U, V, (cx - ax - 0.02, 0, cx + ax + 0.02,
                                                                              cy + ay + 0.03))
                img[:] += 0.55 * m * (lung_mask + 0.25)
                size = "small" if frac > 0.7 else "moderate"
                lesions.append(Lesion(f, side, (cx - ax, top, cx + ax, cy + ay), size))
        elif f == "Pneumothorax":
            side = side_choice()
            cx, cy, ax, ay = geom.lungs[side]
            depth = rng.uniform(0.26, 0.36)
            bottom = cy - ay + 2 * ay * depth
            lateral = side == "R"
            # region: the lung above a curved line; pleural line at its border
            curve = bottom - 0.05 * ((U - cx) / ax) ** 2
            reg = lung_mask * np.clip((curve - V) / 0.006 + 0.5, 0, 1)
            img[:] = img * (1 - reg) + 0.04 * reg
            line = lung_mask * np.clip(1 - np.abs(V - curve) / 0.006, 0, 1)
            img[:] += 0.3 * line
            lesions.append(Lesion(f, side, (cx - ax, cy - ay, cx + ax, bottom + 0.005)))
        elif f == "Atelectasis":
            side = side_choice()
            cx, cy, ax, ay = geom.lungs[side]
            y = cy + ay * rng.uniform(0.35, 0.55)
            sgn = -1 if side == "R" else 1
            p0 = (cx - sgn * 0.7 * ax, y - 0.035)
            p1 = (cx + sgn * 0.45 * ax, y + 0.035)
            hw = rng.uniform(0.012, 0.018)
            m = _segment(U, V, p0, p1, hw)
            img[:] += 0.5 * m
            lesions.append(Lesion(f, side, (min(p0[0], p1[0]) - hw, min(p0[1], p1[1]) - hw,
                                            max(p0[0], p1[0]) + hw, max(p0[1], p1[1]) + hw)))
        elif f in ("Infiltration", "Pneumonia", "Consolidation"):
            side = side_choice()
            cx, cy, ax, ay = geom.lungs[side]
            med = 1 if side == "R" else -1   # +u towards the midline for R
            if f == "Infiltration":
                ccx, ccy, rx, ry = cx + rng.uniform(-0.2, 0.2) * ax, cy + rng.uniform(-0.05, 0.12) * ay, 0.7 * ax, 0.22 * ay
            elif f == "Pneumonia":
                ccx, ccy, rx, ry = cx + rng.uniform(-0.2, 0.2) * ax, cy - 0.45 * ay, 0.6 * ax, 0.2 * ay
            else:
                ccx, ccy, rx, ry = cx + med * 0.3 * ax, cy + 0.42 * ay, 0.5 * ax, 0.2 * ay
            region = _ellipse(U, V, ccx, ccy, rx, ry, soft=0.3)
            if f == "Infiltration":
                tex = _smooth_noise(rng, H, W, max(2, W // 24))
                m = region * np.clip(tex * 1.5, 0, 1)
                amp = 0.5
            elif f == "Pneumonia":
                tex = _smooth_noise(rng, H, W, max(1, W // 64))
                m = region * np.clip(tex - 0.1, 0, 1)
                amp = 0.55
            else:
                m = region * np.clip(0.8 + 0.3 * _smooth_noise(rng, H, W, max(2, W // 16)), 0, 1)
                bronch = np.abs(np.sin((U - ccx) * 70 + 8 * (V - ccy))) < 0.12
                m = m * np.where(bronch, 0.45, 1.0)
                amp = 0.45
            img[:] += amp * m
            lesions.append(Lesion(f, side, (ccx - rx, ccy - ry, ccx + rx, ccy + ry)))
        elif f == "Edema":
            boxes = []
            for side in ("R", "L"):
                hx0, hy0, hx1, hy1 = geom.zone(side, "hilar")
                gx, gy = (hx0 + hx1) / 2, (hy0 + hy1) / 2
                sx, sy = 0.1, 0.13
                g = np.exp(-(((U - gx) / sx) ** 2 + ((V - gy) / sy) ** 2))
                img[:] += 0.4 * g * (lung_mask + 0.2)
                boxes.append((gx - 1.5 * sx, gy - 1.5 * sy, gx + 1.5 * sx, gy + 1.5 * sy))
            lesions.append(Lesion(f, "B", (min(b[0] for b in boxes), min(b[1] for b in boxes),
                                           max(b[2] for b in boxes), max(b[3] for b in boxes))))
        elif f == "Fibrosis":
            period = 0.028
            grid = (np.abs(np.sin(np.pi * (U + V * 0.3) / period)) < 0.22) | \
                   (np.abs(np.sin(np.pi * (V - U * 0.3) / period)) < 0.22)
            boxes = []
            for side in ("R", "L"):
                box = geom.zone(side, "lower")
                box = (box[0], box[1] - 0.05, box[2], box[3] - 0.02)
                m = _box_mask(U, V, box, soft=0.02) * lung_mask * grid
                img[:] += 0.3 * m
                boxes.append(box)
            lesions.append(Lesion(f, "B", (boxes[0][0], min(b[1] for b in boxes), boxes[1][2],
                                           max(b[3] for b in boxes))))
        elif f == "Pleural_Thickening":
            side = side_choice()
            cx, cy, ax, ay = geom.lungs[side]
            r = np.sqrt(((U - cx) / ax) ** 2 + ((V - cy) / ay) ** 2)
            lateral = (U < cx - 0.3 * ax) if side == "R" else (U > cx + 0.3 * ax)
            band = np.clip(1.5 - np.abs(r - 0.9) / 0.07, 0, 1) * lateral * (V < cy + 0.2 * ay) * (V > cy - 0.8 * ay)
            img[:] += 0.55 * band
            x0 = cx - ax if side == "R" else cx + 0.3 * ax
            x1 = cx - 0.3 * ax if side == "R" else cx + ax
            lesions.append(Lesion(f, side, (x0, cy - 0.8 * ay, x1, cy + 0.2 * ay)))
        elif f == "Hernia":
            hx, hy, hax, hay = geom.heart
            cx, cy, r = hx - 0.25 * hax, hy + 0.8 * hay, 0.065
            m = _ellipse(U, Va, cx, cy * aspect, r, r, soft=0.15)
            rim = np.clip(1 - np.abs(np.hypot(U - cx, Va - cy * aspect) - r) / 0.008, 0, 1)
            air = m * (V < cy)
            fluid = m * (V >= cy)
            img[:] = img * (1 - air) + 0.12 * air
            img[:] = img * (1 - fluid) + 0.9 * fluid
            img[:] += 0.3 * rim
            lesions.append(Lesion(f, "C", (cx - r, cy - r / aspect, cx + r, cy + r / aspect)))
        elif f == "Fracture":
            side = side_choice()
            cx, cy, ax, ay = geom.lungs[side]
            x = cx - 1.02 * ax if side == "R" else cx + 1.02 * ax
            y = cy + rng.uniform(-0.4, 0.2) * ay
            r = 0.03
            m = _ellipse(U, Va, x, y * aspect, r, r * 0.6, soft=0.3)
            gap = np.abs(V - y) < 0.004
            img[:] += 0.5 * m * np.where(gap, -0.8, 1.0)
            lesions.append(Lesion(f, side, (x - r, y - 0.6 * r / aspect, x + r, y + 0.6 * r / aspect)))
        elif f == "Support_Devices":
            tx0, ty0, tx1, ty1 = geom.trachea
            tx = (tx0 + tx1) / 2
            m = _segment(U, V, (tx, 0.0), (tx, ty1 - 0.02), 0.006)
            cx, cy, ax, ay = geom.lungs["R"]
            p0, p1, p2 = (cx - 0.6 * ax, cy - ay - 0.02), (tx - 0.03, cy - 0.6 * ay), (tx - 0.02, cy - 0.2 * ay)
            m = np.maximum(m, np.maximum(_segment(U, V, p0, p1, 0.004), _segment(U, V, p1, p2, 0.004)))
            img[:] += 0.6 * m
            lesions.append(Lesion(f, "C", (min(p0[0], tx - 0.01), 0.0, tx + 0.01, max(p2[1], ty1))))
        else:
            raise ValueError(f"no pattern for finding {f!r}")
    return lesions


_MAX_DRAW = 512   # larger images are drawn at this size, upscaled, and given full-resolution grain


def _upscaled(draw, rng, height, width, *args):
    """Run ``draw(rng, *args, h, w)`` at most _MAX_DRAW px, then upscale to (height, width) and add grain."""
    s = _MAX_DRAW / max(height, width)
    if s >= 1.0:
        return draw(rng, *args, height, width)
    out = draw(rng, *args, max(32, int(round(height * s))), max(32, int(round(width * s))))
    img, rest = (out[0], out[1:]) if isinstance(out, tuple) else (out, None)
    big = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    big += 4.0 * rng.standard_normal((height, width), dtype=np.float32)
    big = np.clip(big + 0.5, 0, 255).astype(np.uint8)
    return (big, *rest) if rest is not None else big


def render_frontal(rng, geom: Geometry, findings, height, width):
    """Draw one frontal chest image with ``findings``; return (uint8 (H, W) image, lesions)."""
    return _upscaled(_render_frontal, rng, height, width, geom, findings)


def render_lateral(rng, findings, height, width):
    """A lateral-looking view: one lung field, heart anterior (image left), spine posterior (image right)."""
    return _upscaled(_render_lateral, rng, height, width, findings)


def _render_frontal(rng, geom: Geometry, findings, height, width):
    H, W = height, width
    aspect = H / W
    u = (np.arange(W, dtype=np.float32) + 0.5) / W
    v = (np.arange(H, dtype=np.float32) + 0.5) / H
    U, V = np.meshgrid(u, v)
    body = _ellipse(U, V, 0.5, 0.56, 0.47, 0.56, soft=0.06)
    img = 0.05 + 0.47 * body * (1.0 - 0.35 * ((U - 0.5) / 0.47) ** 2)
    # clavicles and spine (bone)
    img += 0.12 * _segment(U, V, (0.12, 0.15), (0.46, 0.19), 0.012) + 0.12 * _segment(U, V, (0.54, 0.19),
                                                                                     (0.88, 0.15), 0.012)
    img += 0.1 * _box_mask(U, V, (0.465, 0.0, 0.535, 1.0), soft=0.02)
    lung_mask = np.zeros_like(img)
    lung_val = 0.09 if geom.emphysema else 0.2
    vessel_amp = 0.015 if geom.emphysema else 0.055
    texture = _smooth_noise(rng, H, W, max(2, W // 40))
    for side in ("R", "L"):
        cx, cy, ax, ay = geom.lungs[side]
        m = _ellipse(U, V, cx, cy, ax, ay, soft=0.05, p_top=2.0, p_bottom=4.0)
        lung_mask = np.maximum(lung_mask, m)
        # ribs: bright arcs, curving down laterally
        phase = (V - cy + 0.25 * ay * ((U - cx) / ax) ** 2) / 0.072
        ribs = np.clip(np.cos(2 * np.pi * phase) * 2.0 - 1.0, 0, 1)
        lungs = lung_val + vessel_amp * texture + 0.07 * ribs
        img = img * (1 - m) + lungs * m
    # mediastinum, trachea, heart
    mx0, my0, mx1, my1 = geom.upper_mediastinum
    img = np.maximum(img, 0.68 * _box_mask(U, V, (mx0, my0, mx1, geom.heart[1]), soft=0.02))
    tx0, ty0, tx1, ty1 = geom.trachea
    tr = _box_mask(U, V, geom.trachea, soft=0.01)
    img = img * (1 - 0.6 * tr) + 0.15 * tr
    hx, hy, hax, hay = geom.heart
    heart = _ellipse(U, V, hx, hy, hax, hay, soft=0.08)
    img = img * (1 - heart) + 0.8 * heart
    # the noise is drawn before the findings, so an image with and without a finding differ only where it is
    noise = 0.03 * _smooth_noise(rng, H, W, max(2, W // 8)) + 0.02 * rng.standard_normal((H, W), dtype=np.float32)
    lesions = _draw_findings(img, U, V, lung_mask, geom, findings, rng, aspect)
    k = max(1, int(round(W / 256.0))) * 2 + 1
    img = cv2.GaussianBlur(img, (k, k), 0) + noise
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8), lesions


def _render_lateral(rng, findings, height, width):
    H, W = height, width
    u = (np.arange(W, dtype=np.float32) + 0.5) / W
    v = (np.arange(H, dtype=np.float32) + 0.5) / H
    U, V = np.meshgrid(u, v)
    img = 0.05 + 0.45 * _ellipse(U, V, 0.5, 0.55, 0.4, 0.55, soft=0.08)
    lung = _ellipse(U, V, 0.52, 0.48, 0.27, 0.34, soft=0.06)
    img = img * (1 - lung) + (0.2 + 0.05 * _smooth_noise(rng, H, W, max(2, W // 40))) * lung
    img += 0.25 * _box_mask(U, V, (0.78, 0.1, 0.86, 1.0), soft=0.02)   # spine
    big = "Cardiomegaly" in findings
    heart = _ellipse(U, V, 0.36 if big else 0.34, 0.62, 0.17 if big else 0.11, 0.15 if big else 0.12, soft=0.1)
    img = img * (1 - heart) + 0.75 * heart
    if "Effusion" in findings:   # posterior costophrenic sulcus
        img += 0.45 * lung * np.clip((V - 0.70) / 0.01, 0, 1) * (U > 0.5)
    if "Pneumothorax" in findings:
        reg = lung * (V < 0.3)
        img = img * (1 - reg) + 0.04 * reg
    img = cv2.GaussianBlur(img, (3, 3), 0) + 0.02 * rng.standard_normal((H, W), dtype=np.float32)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


# ==================================================================================================== cases
class _Deck:
    """Deals findings like cards from shuffled decks of a layout's findings, so every finding gets an (almost)
    equal share of the abnormal images whatever n is (i.i.d. draws leave some class at 5% on n=200)."""

    def __init__(self, rng, findings):
        self.rng, self.findings, self.cards = rng, list(findings), []

    def deal(self, k):
        out = []
        while len(out) < k:
            if not self.cards:
                self.cards = list(self.rng.permutation(self.findings))
            card = self.cards.pop()
            if card in out:   # put it back for the next image
                self.cards.insert(0, card)
                if len(set(self.cards) - set(out)) == 0:
                    self.cards += list(self.rng.permutation(self.findings))
                continue
            out.append(card)
        return out


def _deck(seed, layout):
    rng = np.random.default_rng(np.random.SeedSequence([seed, _LAYOUT_CODE[layout], 7]))
    return _Deck(rng, LAYOUT_FINDINGS[layout])


def _draw_case_findings(rng, deck: _Deck):
    """No finding (40%) or 1-4 findings dealt from ``deck``; Edema brings Cardiomegaly half the time."""
    if rng.random() < NO_FINDING_FRACTION:
        return []
    k = int(rng.choice(len(_N_FINDINGS_P), p=_N_FINDINGS_P)) + 1
    chosen = deck.deal(k)
    if "Edema" in chosen and "Cardiomegaly" in deck.findings and "Cardiomegaly" not in chosen \
            and rng.random() < 0.5:
        chosen.append("Cardiomegaly")
    return [f for f in FINDINGS if f in chosen]   # canonical order


@dataclass
class Case:
    """One image to write: where it goes, what it shows, and how (messy kind)."""
    rel: str                 # path relative to the layout root
    findings: list
    view: str = "frontal"    # "frontal" or "lateral"
    messy: str = ""          # "", "rgba", "16bit", "nonsquare", "exif"
    seed: tuple = ()
    image_id: str = ""


def _render_case(case: Case, size: int, fmt: str):
    """Render a case; return (intended upright uint8 image, lesions, geometry or None, encoded bytes)."""
    rng = np.random.default_rng(np.random.SeedSequence(list(case.seed)))
    H, W = (int(round(size * 1.25)), size) if case.messy == "nonsquare" else (size, size)
    geom = None
    lesions = []
    if case.view == "frontal":
        geom = _make_geometry(rng, case.findings)
        img, lesions = render_frontal(rng, geom, case.findings, H, W)
    else:
        img = render_lateral(rng, case.findings, H, W)
    return img, lesions, geom, _encode(img, fmt, case.messy)


def _encode(img: np.ndarray, fmt: str, messy: str) -> bytes:
    if fmt == "png":
        if messy == "rgba":
            arr = np.dstack([img, img, img, np.full_like(img, 255)])   # gray BGR + alpha
        elif messy == "16bit":
            arr = img.astype(np.uint16) * 257
        else:
            arr = img
        ok, buf = cv2.imencode(".png", arr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise RuntimeError("PNG encoding failed")
        return buf.tobytes()
    if fmt == "jpg":
        if messy == "exif":
            # stored = upright rotated 90 degrees counter-clockwise; Orientation 6 tells viewers to rotate back
            stored = Image.fromarray(img).transpose(Image.Transpose.ROTATE_90)
            exif = Image.Exif()
            exif[0x0112] = 6
            bio = io.BytesIO()
            stored.save(bio, format="JPEG", quality=95, exif=exif.tobytes())
            return bio.getvalue()
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        return buf.tobytes()
    raise ValueError(fmt)


def _px_box(box, H, W):
    """Normalised (x0, y0, x1, y1) -> pixel [x, y, w, h] clipped to the image, rounded to 2 decimals."""
    x0, y0, x1, y1 = (float(b) for b in box)
    x0, x1 = max(0.0, x0 * W), min(float(W), x1 * W)
    y0, y1 = max(0.0, y0 * H), min(float(H), y1 * H)
    return [round(x0, 2), round(y0, 2), round(max(0.0, x1 - x0), 2), round(max(0.0, y1 - y0), 2)]


def _write_case(args):
    """Worker: render and write one case; return its truth record (JSON-able)."""
    case, root, size, fmt = args
    img, lesions, geom, data = _render_case(case, size, fmt)
    path = Path(root) / case.rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    H, W = img.shape
    rec = {"path": case.rel, "image_id": case.image_id, "view": case.view, "findings": list(case.findings),
           "height": H, "width": W, "messy": case.messy,
           "lesions": [{"finding": l.finding, "side": l.side, "size": l.size, "box": _px_box(l.box, H, W)}
                       for l in lesions]}
    if geom is not None:
        rec["anatomy"] = {k: _px_box(b, H, W) for k, b in geom.anatomy_boxes().items()}
    return rec


def _write_all(cases: Sequence[Case], root: Path, size: int, fmt: str, workers: int):
    jobs = [(c, str(root), size, fmt) for c in cases]
    if workers > 1 and len(jobs) > 8:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            return list(ex.map(_write_case, jobs, chunksize=max(1, len(jobs) // (4 * workers))))
    return [_write_case(j) for j in jobs]


def _assign_messy(cases: Sequence[Case], kinds: Sequence[str]) -> dict:
    """Give the first frontal cases after the first one the messy kinds; return {kind: rel path}."""
    out = {}
    frontal = [c for c in cases if c.view == "frontal"][1:]
    for kind, c in zip(kinds, frontal):
        c.messy = kind
        out[kind] = c.rel
    return out


def _write_text(path: Path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _write_csv(df: pd.DataFrame, path: Path, **kw):
    _write_text(path, df.to_csv(index=False, lineterminator="\n", **kw))


_MESSY_DOC = {
    "rgba": "RGBA PNG (gray copied into R, G, B; alpha 255): a reader must drop alpha and convert to gray",
    "16bit": "16-bit grayscale PNG, value = 8-bit value * 257 (>> 8 or / 257 gives the intended 8-bit image)",
    "nonsquare": "non-square image, height = round(1.25 * width); its boxes are in its own pixels",
    "exif": "JPEG whose stored pixels are rotated 90 degrees counter-clockwise, with EXIF Orientation = 6: "
            "PIL.ImageOps.exif_transpose restores the upright image (width and height as written in the CSVs)",
}


def _finish(root: Path, layout, n, size, seed, messy: dict, truth: list, extra_readme=""):
    lines = [f"Synthetic twin, layout {layout!r} (n={n}, size={size}, seed={seed}), written by "
             f"shared.data.synthetic. Not real patient data.", "",
             "Files that are messy on purpose (real-world formats readers must handle):"]
    for kind, rel in messy.items():
        lines.append(f"  {kind:10s} {rel}: {_MESSY_DOC[kind]}")
    lines += ["", "truth.json: per image the drawn findings, the true lesion boxes [x, y, w, h] and the 18 anatomy "
              "boxes, in pixels of the written (upright) image.", "messy.json: the list above as {kind: path}.",
              extra_readme]
    _write_text(root / "README.txt", "\n".join(lines).rstrip() + "\n")
    _write_text(root / "messy.json", json.dumps(messy, indent=1) + "\n")
    _write_text(root / "truth.json", json.dumps({r["path"]: r for r in truth}, separators=(",", ":")) + "\n")
    _write_text(root / ".complete", json.dumps(_params(layout, n, size, seed)) + "\n")


def _params(layout, n, size, seed):
    return {"layout": layout, "n": int(n), "size": int(size), "seed": int(seed), "version": 1}


def is_complete(out, layout, n, size, seed) -> bool:
    """True when ``out`` holds a finished twin written with exactly these parameters."""
    p = Path(out) / ".complete"
    try:
        return json.loads(p.read_text()) == _params(layout, n, size, seed)
    except (OSError, ValueError):
        return False


# ==================================================================================================== NIH
def _patients(rng, n, max_images=5):
    """Split n images into patients with 1..max_images images each; return list of image counts."""
    counts, left = [], n
    while left > 0:
        k = min(left, int(rng.choice(np.arange(1, max_images + 1), p=[0.45, 0.25, 0.15, 0.1, 0.05][:max_images]
                                                                     / np.sum([0.45, 0.25, 0.15, 0.1, 0.05][:max_images]))))
        counts.append(k)
        left -= k
    return counts


def _gen_nih(root: Path, n, size, seed, workers):
    rng = np.random.default_rng(np.random.SeedSequence([seed, _LAYOUT_CODE["nih"], 0]))
    counts = _patients(rng, n)
    pids = np.sort(rng.choice(np.arange(1, 30806), size=len(counts), replace=False))
    cases, rows = [], []
    deck = _deck(seed, "nih")
    i = 0
    for pid, k in zip(pids, counts):
        sex = "M" if rng.random() < 0.55 else "F"
        age0 = int(rng.integers(18, 80))
        ow, oh = int(rng.integers(2400, 3000)), int(rng.integers(2400, 3000))
        sp = float(rng.choice([0.143, 0.139, 0.168]))
        for fu in range(k):
            name = f"{pid:08d}_{fu:03d}.png"
            crng = np.random.default_rng(np.random.SeedSequence([seed, _LAYOUT_CODE["nih"], 1, i]))
            findings = _draw_case_findings(crng, deck)
            cases.append(Case(rel=f"images/{name}", findings=findings, seed=(seed, _LAYOUT_CODE["nih"], 2, i),
                              image_id=name))
            rows.append({"Image Index": name,
                         "Finding Labels": "|".join(findings) if findings else "No Finding",
                         "Follow-up #": fu, "Patient ID": int(pid), "Patient Age": age0 + fu // 2,
                         "Patient Gender": sex, "View Position": "PA" if crng.random() < 0.6 else "AP",
                         "w": ow, "h": oh, "sx": sp, "sy": sp})
            i += 1
    messy = _assign_messy(cases, ["rgba", "16bit", "nonsquare"])
    truth = _write_all(cases, root, size, "png", workers)
    # Data_Entry: the real header (OriginalImage[Width,Height] and the spacing are two columns each)
    header = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
    lines = [header] + [f"{r['Image Index']},{r['Finding Labels']},{r['Follow-up #']},{r['Patient ID']},"
                        f"{r['Patient Age']},{r['Patient Gender']},{r['View Position']},{r['w']},{r['h']},"
                        f"{r['sx']},{r['sy']}" for r in rows]
    _write_text(root / "Data_Entry_2017.csv", "\n".join(lines) + "\n")
    # boxes: about half of the images that have one of the 8 box labels get all their boxes of those labels
    brng = np.random.default_rng(np.random.SeedSequence([seed, _LAYOUT_CODE["nih"], 3]))
    blines = ["Image Index,Finding Label,Bbox [x,y,w,h],,,"]
    for rec in truth:
        box_lesions = [l for l in rec["lesions"] if l["finding"] in NIH_BOX_LABELS]
        if box_lesions and brng.random() < 0.5:
            rec["in_bbox_list"] = True
            for l in box_lesions:
                x, y, w, h = l["box"]
                blines.append(f"{rec['image_id']},{NIH_BOX_LABELS[l['finding']]},{x},{y},{w},{h}")
    _write_text(root / "BBox_List_2017.csv", "\n".join(blines) + "\n")
    # patient-disjoint official-style lists (~80/20), no final newline like the real files
    order = rng.permutation(len(pids))
    n_test = max(1, int(round(0.2 * len(pids)))) if len(pids) > 1 else 0
    test_p = set(int(pids[j]) for j in order[:n_test])
    train = [r["Image Index"] for r in rows if r["Patient ID"] not in test_p]
    test = [r["Image Index"] for r in rows if r["Patient ID"] in test_p]
    _write_text(root / "train_val_list.txt", "\n".join(train))
    _write_text(root / "test_list.txt", "\n".join(test))
    _finish(root, "nih", n, size, seed, messy, truth,
            "BBox_List_2017.csv holds boxes for about half of the images that show one of its 8 labels (the real "
            "file has them only for test_list images).")
    return root


# ==================================================================================================== reports
_SIDE = {"R": "right", "L": "left", "B": "bilateral", "C": ""}
# internal finding -> (certain sentence, uncertain sentence, impression phrase); {side} {size} filled in
_SENTENCES = {
    "Effusion": ("There is a {size} {side} pleural effusion.", "Possible {size} {side} pleural effusion.",
                 "{Size} {side} pleural effusion."),
    "Cardiomegaly": ("The heart is moderately enlarged.", "The heart size may be mildly enlarged.", "Cardiomegaly."),
    "Nodule": ("There is a small nodule in the {side} lung.", "A possible small nodule projects over the {side} lung.",
               "{Side} lung nodule."),
    "Mass": ("There is a large mass in the {side} upper lung.", "Cannot exclude a mass in the {side} upper lung.",
             "{Side} upper lung mass."),
    "Pneumothorax": ("There is a {side} apical pneumothorax.", "Possible small {side} apical pneumothorax.",
                     "{Side} apical pneumothorax."),
    "Atelectasis": ("Plate-like atelectasis is seen at the {side} lung base.",
                    "Linear opacity at the {side} lung base may reflect atelectasis.", "{Side} basilar atelectasis."),
    "Infiltration": ("There is a patchy opacity in the {side} mid lung.",
                     "There may be a faint opacity in the {side} mid lung.", "Patchy {side} mid lung opacity."),
    "Consolidation": ("There is dense consolidation in the {side} lower lobe.",
                      "Possible consolidation in the {side} lower lobe.", "{Side} lower lobe consolidation."),
    "Pneumonia": ("Patchy opacity in the {side} upper lobe is consistent with pneumonia.",
                  "Patchy opacity in the {side} upper lobe, pneumonia cannot be excluded.",
                  "{Side} upper lobe pneumonia."),
    "Edema": ("Perihilar haziness is consistent with pulmonary edema.",
              "Perihilar haziness may reflect mild pulmonary edema.", "Pulmonary edema."),
    "Pleural_Thickening": ("There is {side} apical pleural thickening.", "Possible {side} pleural thickening.",
                           "{Side} pleural thickening."),
    "Enlarged_CM": ("The cardiomediastinal silhouette is enlarged.",
                    "The mediastinum may be widened.", "Widened mediastinum."),
    "Fracture": ("There is a healing {side} rib fracture.", "Possible {side} rib fracture.", "{Side} rib fracture."),
    "Support_Devices": ("An endotracheal tube and a right central venous catheter are in place.",
                        "An endotracheal tube and a right central venous catheter are in place.",
                        "Support devices in place."),
}
_NEGATIVES = {
    "Pleural Effusion": "No pleural effusion.", "Pneumothorax": "No pneumothorax.",
    "Consolidation": "No focal consolidation.", "Edema": "No pulmonary edema.", "Cardiomegaly": "Heart size is normal.",
    "Enlarged Cardiomediastinum": "The mediastinal contours are normal.", "Pneumonia": "No evidence of pneumonia.",
    "Atelectasis": "No atelectasis.", "Lung Lesion": "No suspicious pulmonary nodules.",
    "Fracture": "No acute displaced fracture.",
}


def _fill(template, side, size):
    s = _SIDE.get(side, "")
    t = template.replace("{Side}", s.capitalize()).replace("{Size}", size.capitalize())
    return " ".join(t.format(side=s, size=size).split()).replace(" .", ".")


@dataclass
class Study:
    """A study's findings, its report, and the CheXpert-style label states derived from that report."""
    findings: list
    lesions: list = field(default_factory=list)     # [(finding, side, size)] from the frontal rendering
    uncertain: set = field(default_factory=set)
    negated: set = field(default_factory=set)       # CheXpert label names said to be absent
    labels: dict = field(default_factory=dict)      # CheXpert label -> 1.0 / 0.0 / -1.0 / nan
    findings_text: str = ""
    impression_text: str = ""


def _study_labels(rng, findings) -> tuple[set, set, dict]:
    """Choose which findings are hedged and which absent labels are negated; return (uncertain, negated, labels)."""
    uncertain = {f for f in findings if f != "Support_Devices" and rng.random() < 0.15}
    labels = {}
    for lab, srcs in CHEXPERT_FROM_FINDINGS.items():
        present = [f for f in srcs if f in findings]
        if present:
            labels[lab] = 1.0 if any(f not in uncertain for f in present) else -1.0
    negated = {lab for lab in _NEGATIVES if lab not in labels and rng.random() < 0.5}
    for lab in negated:
        labels[lab] = 0.0
    pathologies = [l for l, v in labels.items() if l != "Support Devices" and v != 0.0]
    out = {lab: labels.get(lab, np.nan) for lab in CHEXPERT_LABELS if lab != "No Finding"}
    out["No Finding"] = np.nan if pathologies else 1.0
    return uncertain, negated, {lab: out[lab] for lab in CHEXPERT_LABELS}


def _report(rng, lesions, uncertain, negated):
    """FINDINGS and IMPRESSION text from the drawn lesions [(finding, side, size)] and negated labels."""
    pos, imp = [], []
    seen = set()
    for f, side, size in lesions:
        if (f, side) in seen:
            continue
        seen.add((f, side))
        cert, unc, phrase = _SENTENCES[f]
        pos.append(_fill(unc if f in uncertain else cert, side, size))
        if f not in uncertain:
            imp.append(_fill(phrase, side, size))
    neg = [_NEGATIVES[lab] for lab in _NEGATIVES if lab in negated]
    sentences = pos + neg
    if not pos:
        sentences = ["The lungs are clear."] + neg
    findings = " ".join(sentences)
    impression = " ".join(imp) if imp else ("No acute cardiopulmonary process." if not pos else
                                            "Findings as above, clinical correlation recommended.")
    return findings, impression


def _lesion_summary(rec):
    """[(finding, side, size)] of a truth record, merging bilateral effusions into one "B" lesion."""
    out = []
    eff_sides = [l["side"] for l in rec["lesions"] if l["finding"] == "Effusion"]
    for l in rec["lesions"]:
        if l["finding"] == "Effusion":
            if len(eff_sides) == 2:
                if ("Effusion", "B", "small") not in out:
                    out.append(("Effusion", "B", "small"))
                continue
        out.append((l["finding"], l["side"], l["size"]))
    for f in rec["findings"]:   # findings without a frontal lesion record (lateral-only studies)
        if not any(o[0] == f for o in out):
            out.append((f, "C" if f in ("Cardiomegaly", "Edema", "Enlarged_CM", "Support_Devices") else "R",
                        "small"))
    return out


def _hexid(rng):
    return "-".join("".join(rng.choice(list("0123456789abcdef"), size=8)) for _ in range(5))


# ==================================================================================================== CheXpert
def _gen_chexpert(root: Path, n, size, seed, workers):
    code = _LAYOUT_CODE["chexpert"]
    rng = np.random.default_rng(np.random.SeedSequence([seed, code, 0]))
    base = root / "CheXpert-v1.0-small"
    cases, rows = [], []
    deck = _deck(seed, "chexpert")
    n_patients_valid = max(1, int(round(0.1 * n / 2.2))) if n >= 4 else 0
    pid, i, n_pat = 0, 0, 0
    while i < n:
        n_pat += 1
        split = "valid" if n_pat <= n_patients_valid else "train"
        # real ids: train patient00001.., valid patient64541..
        pid = 64540 + n_pat if split == "valid" else n_pat - n_patients_valid
        sex = "Male" if rng.random() < 0.55 else "Female"
        age = int(rng.integers(18, 90))
        for s in range(1, int(rng.integers(1, 4)) + 1):
            if i >= n:
                break
            crng = np.random.default_rng(np.random.SeedSequence([seed, code, 1, pid, s]))
            findings = _draw_case_findings(crng, deck)
            unc, neg, labels = _study_labels(crng, findings)
            if split == "valid":   # radiologist-labelled: only 0/1, no blanks
                labels = {k: (0.0 if (np.isnan(v) or v == 0.0) else 1.0) for k, v in labels.items()}
            ap = "AP" if crng.random() < 0.6 else "PA"
            views = [("frontal", "view1_frontal.jpg")]
            if crng.random() < 0.3 and i + 1 < n:
                views.append(("lateral", "view2_lateral.jpg"))
            for view, fname in views:
                rel = f"CheXpert-v1.0-small/{split}/patient{pid:05d}/study{s}/{fname}"
                cases.append(Case(rel=rel, findings=findings, view=view, seed=(seed, code, 2, i), image_id=rel))
                rows.append({"split": split, "Path": rel, "Sex": sex, "Age": age,
                             "Frontal/Lateral": view.capitalize(), "AP/PA": ap if view == "frontal" else "",
                             **labels})
                i += 1
    messy = _assign_messy(cases, ["exif", "nonsquare"])
    truth = _write_all(cases, root, size, "jpg", workers)
    df = pd.DataFrame(rows)
    cols = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"] + CHEXPERT_LABELS
    for split in ("train", "valid"):
        _write_csv(df[df["split"] == split][cols], base / f"{split}.csv")
    _write_ham_chexpert_boxes(truth, base / "BBoxes.json")
    _finish(root, "chexpert", n, size, seed, messy, truth,
            "CheXpert-v1.0-small/valid.csv has only 0.0/1.0 (like the real radiologist-labelled validation set).\n"
            "CheXpert-v1.0-small/BBoxes.json: the true boxes of the training images in HAM's CheXpert box format "
            "(box_sizes.csv: the image size they refer to).")
    return root


# the twin's findings under the names of HAM's 9 CheXpert box classes (shared.data.splits.HAM_CHEXPERT_CLASSES)
_HAM_CHEXPERT_BOX_NAMES = {"Cardiomegaly": "Cardiomegaly", "Effusion": "Pleural_Effusion", "Edema": "Edema",
                           "Enlarged_CM": "Enlarged_Cardiomediastinum", "Atelectasis": "Atelectasis",
                           "Pneumonia": "Pneumonia", "Fracture": "Fracture", "Consolidation": "Consolidation",
                           "Pneumothorax": "Pneumothorax"}


def _write_ham_chexpert_boxes(truth: list, path: Path):
    """HAM's CheXpert ``BBoxes.json`` ({path below CheXpert-v1.0-small/: {class: [[xmin, ymin, xmax, ymax]]}}) for
    the boxed training images, so HAM's CheXpert setting runs on the twin (``data.boxes``)."""
    out, sizes = {}, []
    for rec in truth:
        rel = rec["path"].split("/", 1)[1]
        for les in rec["lesions"] if rel.startswith("train/") else ():
            name = _HAM_CHEXPERT_BOX_NAMES.get(les["finding"])
            if name:
                x, y, w, h = les["box"]
                out.setdefault(rel, {}).setdefault(name, []).append([x, y, x + w, y + h])
        if rel in out:
            sizes.append({"image_id": rel, "width": rec["width"], "height": rec["height"]})
    _write_text(path, json.dumps(out, indent=1))
    # the size the boxes refer to (HAM's data.box_sizes): here the written image itself
    _write_csv(pd.DataFrame(sizes, columns=["image_id", "width", "height"]), path.with_name("box_sizes.csv"))


# ==================================================================================================== MIMIC
_MIMIC_META_COLS = ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
                    "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
                    "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning"]


def _mimic_plan(n, seed, code):
    """Subjects, studies and images of a MIMIC-CXR twin with n images (deterministic)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, code, 0]))
    subjects = rng.choice(np.arange(10_000_000, 20_000_000), size=n, replace=False)
    study_ids = rng.choice(np.arange(50_000_000, 60_000_000), size=n, replace=False)
    cases, meta, studies = [], [], []
    deck = _deck(seed, "mimic")
    i = si = 0
    for subj in subjects:
        if i >= n:
            break
        subj = int(subj)
        u = rng.random()
        split = "train" if u < 0.7 else ("validate" if u < 0.8 else "test")
        for _ in range(int(rng.integers(1, 4))):
            if i >= n:
                break
            study = int(study_ids[si])
            si += 1
            crng = np.random.default_rng(np.random.SeedSequence([seed, code, 1, study]))
            findings = _draw_case_findings(crng, deck)
            unc, neg, labels = _study_labels(crng, findings)
            ap = "AP" if crng.random() < 0.5 else "PA"
            views = [ap] + (["LATERAL"] if crng.random() < 0.4 and i + 1 < n else [])
            folder = f"files/p{str(subj)[:2]}/p{subj}/s{study}"
            st = Study(findings=findings, uncertain=unc, negated=neg, labels=labels)
            st.subject_id, st.study_id, st.split, st.folder, st.dicoms = subj, study, split, folder, []
            st.impression_only = crng.random() < 0.1
            date = 21000000 + int(crng.integers(0, 90)) * 10000 + int(crng.integers(1, 13)) * 100 + \
                int(crng.integers(1, 29))
            for vp in views:
                dicom = _hexid(crng)
                rel = f"{folder}/{dicom}.jpg"
                cases.append(Case(rel=rel, findings=findings, view="lateral" if vp == "LATERAL" else "frontal",
                                  seed=(seed, code, 2, i), image_id=dicom))
                meta.append({"dicom_id": dicom, "subject_id": subj, "study_id": study,
                             "PerformedProcedureStepDescription": "CHEST (PORTABLE AP)" if ap == "AP"
                             else "CHEST (PA AND LAT)", "ViewPosition": vp, "StudyDate": date,
                             "StudyTime": round(float(crng.uniform(0, 235959)), 3),
                             "ProcedureCodeSequence_CodeMeaning": "CHEST (PORTABLE AP)" if ap == "AP"
                             else "CHEST (PA AND LAT)",
                             "ViewCodeSequence_CodeMeaning": {"AP": "antero-posterior", "PA": "postero-anterior",
                                                              "LATERAL": "lateral"}[vp],
                             "PatientOrientationCodeSequence_CodeMeaning": "Recumbent" if ap == "AP" else "Erect",
                             "split": split})
                st.dicoms.append(dicom)
                i += 1
            studies.append(st)
    return cases, meta, studies


def _gen_mimic(root: Path, n, size, seed, workers, scene_graphs=False):
    code = _LAYOUT_CODE["mimic"]
    cases, meta, studies = _mimic_plan(n, seed, code)
    messy = _assign_messy(cases, ["exif", "nonsquare"])
    truth = _write_all(cases, root, size, "jpg", workers)
    by_dicom = {r["image_id"]: r for r in truth}
    meta_by_dicom = {m["dicom_id"]: m for m in meta}
    for m in meta:
        rec = by_dicom[m["dicom_id"]]
        m["Rows"], m["Columns"] = rec["height"], rec["width"]
    # reports, from the frontal image's lesions (sides and sizes as drawn)
    for st in studies:
        frontal = [by_dicom[d] for d in st.dicoms if by_dicom[d]["view"] == "frontal"]
        rec = frontal[0] if frontal else by_dicom[st.dicoms[0]]
        st.lesions = _lesion_summary(rec)
        rrng = np.random.default_rng(np.random.SeedSequence([seed, code, 4, st.study_id]))
        st.findings_text, st.impression_text = _report(rrng, st.lesions, st.uncertain, st.negated)
        indication = f"___-year-old {'man' if rrng.random() < 0.5 else 'woman'} with " + \
            str(rrng.choice(["cough", "shortness of breath", "fever", "chest pain", "evaluate for pneumonia"])) + "."
        body = [" " * 33 + "FINAL REPORT",
                f" EXAMINATION:  {meta_by_dicom[st.dicoms[0]]['PerformedProcedureStepDescription']}",
                " ", f" INDICATION:  {indication}", " ", " COMPARISON:  None.", " "]
        if not st.impression_only:
            body += [" FINDINGS:", " ", " " + st.findings_text, " "]
        body += [" IMPRESSION:", " ", " " + st.impression_text, ""]
        _write_text(root / f"{st.folder}.txt", "\n".join(body))
        for d in st.dicoms:
            by_dicom[d]["report"] = {"findings": "" if st.impression_only else st.findings_text,
                                     "impression": st.impression_text}
    # the four CSVs (sorted like the real files)
    mdf = pd.DataFrame(meta).sort_values(["subject_id", "study_id", "dicom_id"])
    _write_csv(mdf[_MIMIC_META_COLS], root / "mimic-cxr-2.0.0-metadata.csv")
    _write_csv(mdf[["dicom_id", "study_id", "subject_id", "split"]], root / "mimic-cxr-2.0.0-split.csv")
    lab_rows, neg_rows = [], []
    for st in sorted(studies, key=lambda s: (s.subject_id, s.study_id)):
        lab_rows.append({"subject_id": st.subject_id, "study_id": st.study_id, **st.labels})
        nrng = np.random.default_rng(np.random.SeedSequence([seed, code, 5, st.study_id]))
        # NegBio differs a little: it calls some hedged findings positive
        neg = {k: (1.0 if (v == -1.0 and nrng.random() < 0.3) else v) for k, v in st.labels.items()}
        neg_rows.append({"subject_id": st.subject_id, "study_id": st.study_id, **neg})
    for name, rows in (("chexpert", lab_rows), ("negbio", neg_rows)):
        df = pd.DataFrame(rows)[["subject_id", "study_id"] + MIMIC_LABELS]
        _write_csv(df, root / f"mimic-cxr-2.0.0-{name}.csv")
    # CheXclusion's test-subject list (ADNet's MIMIC test set), here the twin's official test subjects
    test_subjects = sorted({m["subject_id"] for m in meta if m["split"] == "test"})
    _write_csv(pd.DataFrame({"subject_id": test_subjects}), root / "testSet_SubjID.csv")
    extra = ("Reports: files/pXX/pSUBJECT/sSTUDY.txt; about 10% have only an IMPRESSION section (like some real ones). "
             "Label files agree with the report sentences (positive 1.0, hedged -1.0, negated 0.0, unmentioned blank); "
             "the negbio file calls ~30% of the hedged findings positive. Split: ~70/10/20 by subject.")
    layout = "mimic"
    if scene_graphs:
        layout = "imagenome"
        extra += "\n" + _write_scene_graphs(root, studies, by_dicom, meta, seed)
    _finish(root, layout, n, size, seed, messy, truth, extra)
    return root


# ==================================================================================================== ImaGenome
_IMAGENOME_LUNG_ANATOMIES = {"R": [a for a in IMAGENOME_ANATOMIES if a.startswith("right")],
                             "L": [a for a in IMAGENOME_ANATOMIES if a.startswith("left")]}


def _overlap(a, b):
    """Intersection of two [x, y, w, h] boxes / the smaller box's area."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    small = max(1e-6, min(a[2] * a[3], b[2] * b[3]))
    return ix * iy / small


def imagenome_findings(rec) -> dict:
    """{anatomy: set of ImaGenome findings} for a frontal truth record (the rule the scene graphs are written by)."""
    out = {a: set() for a in IMAGENOME_ANATOMIES}
    present = set(rec["findings"])
    for l in rec["lesions"]:
        f = l["finding"]
        for g, (_, srcs) in IMAGENOME_FROM_FINDINGS.items():
            if f not in srcs:
                continue
            if g == "fluid overload/heart failure" and "Cardiomegaly" not in present:
                continue
            if f == "Cardiomegaly":
                out["cardiac silhouette"].add(g)
                continue
            if f == "Edema":
                targets = [f"{s} {z}" for s in ("right", "left") for z in ("lung", "hilar structures",
                                                                           "mid lung zone")]
                for a in targets:
                    out[a].add(g)
                continue
            sides = ["R", "L"] if l["side"] == "B" else [l["side"]]
            for s in sides:
                for a in _IMAGENOME_LUNG_ANATOMIES[s]:
                    if a.endswith(" lung") or _overlap(l["box"], rec["anatomy"][a]) > 0.3:
                        out[a].add(g)
    return out


def _write_scene_graphs(root: Path, studies, by_dicom, meta, seed) -> str:
    code = _LAYOUT_CODE["imagenome"]
    meta_by = {m["dicom_id"]: m for m in meta}
    sg_dir = root / "silver" / "scene_graph"
    dropped = None
    conflicts = []
    for st in studies:
        for d in st.dicoms:
            rec = by_dicom[d]
            if rec["view"] != "frontal":
                continue
            rng = np.random.default_rng(np.random.SeedSequence([seed, code, 6, st.study_id, len(d)]))
            H, W = rec["height"], rec["width"]
            sx, sy = 224.0 / W, 224.0 / H
            objects = []
            anatomy = dict(rec["anatomy"])
            if dropped is None and len(studies) > 3 and st is studies[2]:
                dropped = (d, "trachea")
                anatomy.pop("trachea")
            for a, (x, y, w, h) in anatomy.items():
                x1, y1, x2, y2 = int(round(x)), int(round(y)), int(round(x + w)), int(round(y + h))
                objects.append({"object_id": f"{d}_{a}", "x1": int(round(x1 * sx)), "y1": int(round(y1 * sy)),
                                "x2": int(round(x2 * sx)), "y2": int(round(y2 * sy)),
                                "width": int(round((x2 - x1) * sx)), "height": int(round((y2 - y1) * sy)),
                                "bbox_name": a, "synsets": [], "name": a.capitalize(),
                                "original_x1": x1, "original_y1": y1, "original_x2": x2, "original_y2": y2,
                                "original_width": x2 - x1, "original_height": y2 - y1})
            yes = imagenome_findings(rec)
            rec["imagenome"] = {a: sorted(v) for a, v in yes.items() if v and a in anatomy}
            attributes = []
            for a in anatomy:
                strings = [f"{IMAGENOME_FROM_FINDINGS[g][0]}|yes|{g}" for g in IMAGENOME_FINDINGS if g in yes[a]]
                phrases = [[*strings, "nlp|yes|abnormal"]] if strings else []
                if strings and rng.random() < 0.03:     # a later sentence contradicts: "yes" must still win
                    g = strings[0].split("|")[2]
                    phrases.append([f"{IMAGENOME_FROM_FINDINGS[g][0]}|no|{g}", "nlp|yes|normal"])
                    conflicts.append((d, a, g))
                negs = []
                if "lung opacity" not in yes[a] and a.endswith(" lung") and rng.random() < 0.5:
                    negs.append("anatomicalfinding|no|lung opacity")
                if "pneumothorax" not in yes[a] and a.endswith("apical zone") and rng.random() < 0.5:
                    negs.append("anatomicalfinding|no|pneumothorax")
                if "pleural effusion" not in yes[a] and a.endswith("costophrenic angle") and rng.random() < 0.5:
                    negs.append("anatomicalfinding|no|pleural effusion")
                if negs:
                    phrases.append(negs + ["nlp|yes|normal"])
                if not phrases:
                    continue
                attributes.append({"bbox_name": a, a: True, "synsets": [], "name": a.capitalize(),
                                   "attributes": phrases, "attributes_ids": [[] for _ in phrases],
                                   "phrases": [st.findings_text or st.impression_text] * len(phrases),
                                   "phrase_IDs": [f"{st.study_id}|{k}" for k in range(len(phrases))],
                                   "sections": ["finding"] * len(phrases),
                                   "comparison_cues": [[] for _ in phrases], "temporal_cues": [[] for _ in phrases],
                                   "severity_cues": [[] for _ in phrases], "texture_cues": [[] for _ in phrases],
                                   "object_id": f"{d}_{a}"})
            m = meta_by[d]
            graph = {"image_id": d, "viewpoint": m["ViewPosition"], "patient_id": st.subject_id,
                     "study_id": st.study_id, "gender": "F", "age_decile": "50-60",
                     "reason_for_exam": "___-year-old with cough.", "StudyOrder": 1,
                     "StudyDateTime": str(m["StudyDate"]), "objects": objects, "attributes": attributes,
                     "relationships": []}
            _write_text(sg_dir / f"{d}_SceneGraph.json", json.dumps(graph, indent=1) + "\n")
    txt = ("silver/scene_graph/<dicom_id>_SceneGraph.json for every frontal image: objects at 224 scale (x1..y2, "
           "width, height) and in written pixels (original_x1..original_y2); attributes 'category|yes|finding' / "
           "'|no|'. truth.json['imagenome'] lists each anatomy's findings (yes wins).")
    if dropped:
        txt += f"\nMessy on purpose: the scene graph of {dropped[0]} lacks the '{dropped[1]}' object (not all 18)."
    txt += (f"\nMessy on purpose: in {len(conflicts)} (image, anatomy) pairs a later phrase says 'no' after an "
            "earlier 'yes' for the same finding (the truth is yes; the original CheXtriev parser lets 'no' win). "
            "scene_graph_messy.json lists them and the image lacking an object.")
    _write_text(root / "scene_graph_messy.json", json.dumps({"dropped_object": list(dropped) if dropped else None,
                                                               "yes_then_no": [list(c) for c in conflicts]}) + "\n")
    return txt


def _gen_imagenome(root: Path, n, size, seed, workers):
    return _gen_mimic(root, n, size, seed, workers, scene_graphs=True)


# ==================================================================================================== OpenI
def _openi_xml(k, img_ids, indication, findings, impression, mesh):
    from xml.sax.saxutils import escape
    parents = "".join(
        f'   <parentImage id="{iid}">\n      <figureId>F{j + 1}</figureId>\n      <caption>Xray Chest PA and '
        f'Lateral</caption>\n      <panel type="single">\n         <url>/hadoop/storage/radiology/extract/{iid}.jpg'
        f'</url>\n         <imgModality>7</imgModality>\n      </panel>\n   </parentImage>\n'
        for j, iid in enumerate(img_ids))
    major = "".join(f"      <major>{escape(m)}</major>\n" for m in mesh)

    def abst(label, text):
        return (f'            <AbstractText Label="{label}">{escape(text)}</AbstractText>\n' if text else
                f'            <AbstractText Label="{label}"/>\n')
    return ('<?xml version="1.0" encoding="utf-8"?>\n<eCitation>\n   <meta type="rr"/>\n'
            f'   <uId id="CXR{k}"/>\n   <pmcId id="{k}"/>\n   <docSource>CXR</docSource>\n   <IUXRId id="{k}"/>\n'
            '   <licenseType>open-access</licenseType>\n   <articleType>XR</articleType>\n'
            '   <publisher>Indiana University</publisher>\n   <title>Indiana University Chest X-ray Collection</title>\n'
            '   <MedlineCitation Owner="Indiana University" Status="supplied by publisher">\n'
            '      <Article PubModel="Electronic">\n'
            '         <ArticleTitle>Indiana University Chest X-ray Collection</ArticleTitle>\n'
            '         <Abstract>\n' + abst("COMPARISON", "None.") + abst("INDICATION", indication) +
            abst("FINDINGS", findings) + abst("IMPRESSION", impression) +
            '         </Abstract>\n      </Article>\n   </MedlineCitation>\n'
            f'   <MeSH>\n{major}   </MeSH>\n{parents}</eCitation>\n')


_MESH = {"Effusion": "Pleural Effusion/{side}/small", "Cardiomegaly": "Cardiomegaly/moderate",
         "Nodule": "Nodule/lung/{side}", "Mass": "Mass/lung/upper lobe/{side}", "Pneumothorax": "Pneumothorax/{side}",
         "Atelectasis": "Pulmonary Atelectasis/base/{side}", "Infiltration": "Opacity/lung/{side}/patchy",
         "Consolidation": "Consolidation/lung/lower lobe/{side}", "Pneumonia": "Pneumonia/upper lobe/{side}",
         "Edema": "Pulmonary Edema", "Pleural_Thickening": "Pleural thickening/{side}",
         "Enlarged_CM": "Mediastinum/enlarged", "Fracture": "Fractures, Bone/ribs/{side}",
         "Support_Devices": "Catheters, Indwelling"}


def _gen_openi(root: Path, n, size, seed, workers):
    code = _LAYOUT_CODE["openi"]
    cases, reports = [], []
    deck = _deck(seed, "openi")
    i, k = 0, 0
    while i < n:
        k += 1
        crng = np.random.default_rng(np.random.SeedSequence([seed, code, 1, k]))
        findings = _draw_case_findings(crng, deck)
        unc, neg, labels = _study_labels(crng, findings)
        ids = [f"CXR{k}_IM-{k:04d}-1001"] + ([f"CXR{k}_IM-{k:04d}-2001"] if crng.random() < 0.7 and i + 1 < n else [])
        for j, iid in enumerate(ids):
            cases.append(Case(rel=f"images/{iid}.png", findings=findings, view="frontal" if j == 0 else "lateral",
                              seed=(seed, code, 2, i), image_id=iid))
            i += 1
        reports.append((k, ids, findings, unc, neg, labels))
    messy = _assign_messy(cases, ["rgba", "16bit", "nonsquare"])
    truth = _write_all(cases, root, size, "png", workers)
    by_id = {r["image_id"]: r for r in truth}
    empty_findings = reports[1][0] if len(reports) > 2 else None
    for k, ids, findings, unc, neg, labels in reports:
        rec = by_id[ids[0]]
        lesions = _lesion_summary(rec)
        rrng = np.random.default_rng(np.random.SeedSequence([seed, code, 4, k]))
        ftext, itext = _report(rrng, lesions, unc, neg)
        if k == empty_findings:
            ftext = ""
        mesh = [_MESH[f].format(side=_SIDE[s] or "bilateral") for f, s, _ in lesions] or ["normal"]
        indication = str(rrng.choice(["Positive TB test", "XXXX-year-old male, chest pain", "Shortness of breath",
                                      "Preop exam"]))
        _write_text(root / "ecgen-radiology" / f"{k}.xml", _openi_xml(k, ids, indication, ftext, itext, mesh))
        for iid in ids:
            by_id[iid]["report"] = {"uid": f"CXR{k}", "findings": ftext, "impression": itext}
            by_id[iid]["labels"] = {a: (None if np.isnan(b) else b) for a, b in labels.items()}
    extra = "ecgen-radiology/<k>.xml: NLMCXR-style reports; images/<parentImage id>.png."
    if empty_findings is not None:
        extra += f"\nMessy on purpose: ecgen-radiology/{empty_findings}.xml has an empty FINDINGS element."
    _finish(root, "openi", n, size, seed, messy, truth, extra)
    return root


# ==================================================================================================== API
_GENERATORS: dict[str, Callable] = {"nih": _gen_nih, "chexpert": _gen_chexpert, "mimic": _gen_mimic,
                                      "imagenome": _gen_imagenome, "openi": _gen_openi}


def generate(layout: str, out, n: int = 200, size: int = 128, seed: int = 0, workers: int = 1) -> Path:
    """Write the synthetic twin of ``layout`` into ``out`` (created; existing twin files are overwritten).

    ``n`` is the number of images (rows of the main label table), ``size`` the image side in pixels (one messy image
    per layout is 1.25x taller), ``seed`` makes it deterministic (same bytes), ``workers`` > 1 renders in parallel
    processes with the same result. Returns ``Path(out)``.
    """
    if layout not in _GENERATORS:
        raise ValueError(f"unknown layout {layout!r}; known: {sorted(_GENERATORS)}")
    if n < 1 or size < 32:
        raise ValueError(f"need n >= 1 and size >= 32, got n={n}, size={size}")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    (root / ".complete").unlink(missing_ok=True)
    return _GENERATORS[layout](root, int(n), int(size), int(seed), int(workers))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m shared.data.synthetic", description=__doc__.split("\n\n")[0])
    p.add_argument("--layout", required=True, choices=LAYOUTS)
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    a = p.parse_args(argv)
    root = generate(a.layout, a.out, n=a.n, size=a.size, seed=a.seed, workers=a.workers)
    print(f"wrote {a.layout} twin ({a.n} images, {a.size} px, seed {a.seed}) to {root}")


if __name__ == "__main__":
    main()
