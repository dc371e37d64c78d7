"""The report's detection part: detector checkpoints scored by COCO AP clean and under
corruptions (mPC, rPC; :mod:`emca_vis.detection.robustness`), with its figures and section.

:func:`compute` runs the analyses and draws the figures (the compute stage); :func:`section`
renders ``report["detection"]`` (the render stage, nothing recomputed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..detection.names import parse_detector_name
from .tables import Column, Table, number, pointer, text

FAMILY_NAMES = {"fasterrcnn": "Faster R-CNN", "maskrcnn": "Mask R-CNN", "retinanet": "RetinaNet"}
MIN_CLEAN_AP = 0.05  # the summary compares rPC only of detectors with at least this clean box AP
DETECTION_SCORE = 0.5  # the grids show the best detection scoring at least this
MAX_BATCH = 8  # detector images are whole (COCO: ~800 px after the resize): small batches bound the memory


def compute(models: list, settings, out: Path) -> dict:
    """Robustness of the detectors in ``models`` on ``settings.detection_data``, their rows and figures."""
    from ..profile import count_parameters
    from ..robustness import evaluate

    path = out / "detection_robustness.json"
    cells = path.with_suffix(".cells.jsonl")
    if cells.exists() and not settings.resume:
        cells.unlink()  # cells are keyed by model label: other checkpoints may share the labels
    results = evaluate(checkpoint=[m.spec for m in models], data=settings.detection_data, split=settings.split,
                       corruptions=list(settings.corruptions), severities=list(settings.severities),
                       backend=settings.backend, n=settings.n_robustness,
                       batch_size=min(settings.batch_size, MAX_BATCH), seed=settings.seed, out=str(path),
                       allow_nonfinite=settings.allow_nonfinite, overwrite=not settings.resume)
    rows = []
    for m in models:
        family, backbone = parse_detector_name(m.meta["model"])
        rows.append({"label": m.label, "model": m.meta["model"], "family": FAMILY_NAMES[family], "backbone": backbone,
                     "params": count_parameters(m.model), "min_size": m.meta["detector"]["min_size"],
                     "max_size": m.meta["detector"]["max_size"], "dataset": m.meta.get("dataset"),
                     "train_bbox_AP": (m.meta.get("metrics") or {}).get("val_bbox_AP"),
                     "checkpoint": m.spec})
    folder = out / "figures"
    figures = {"detection_ap_severity": ap_severity_figure(results, folder / "detection_ap_severity.png"),
               "detection_mpc_rpc": mpc_rpc_figure(results, folder / "detection_mpc_rpc.png")}
    return {"data": settings.detection_data, "split": settings.split, "models": rows, "robustness": results,
            "figures": {key: p.relative_to(out).as_posix() for key, p in figures.items()},
            "grid": heatmap_grids(models, settings, out)}


# ------------------------------------------------------------------ heatmap grids ----------

def heatmap_grids(models: list, settings, out: Path) -> dict:
    """Per sample image, each detector's best detection and its heatmap, clean and under the grid's
    corruptions (:func:`emca_vis.detection.explain.explain_detections`); figures and ``detection_grid.npz``."""
    from ..detection.data import build_detection_dataset
    from ..detection.explain import DEFAULT_LAYER, DEFAULT_METHODS, explain_detections, match
    from ..outputs import write_npz
    from ..robustness import corrupt
    from .grid import condition_title, conditions

    # The detectors' own defaults (LayerCAM on the finest pyramid level): --method and --layer
    # are the classifiers' (a classifier's layer4 is not a detector's best layer).
    method, layer = DEFAULT_METHODS[0], DEFAULT_LAYER
    conds = conditions(settings.grid_corruptions, settings.grid_severities)
    dataset = build_detection_dataset(settings.detection_data, settings.split, masks=False,
                                      length=settings.samples, image_size=models[0].input_size)
    samples, arrays = [], {}
    for i in range(min(settings.samples, len(dataset))):
        image, target = dataset[i]
        # The same noise for every detector: the corrupted image is the condition, not the model.
        inputs = [image if name == "clean" else corrupt(image[None], name, severity, settings.backend,
                                                        seed=settings.seed * 100_003 + i)[0].clamp(0, 1)
                  for name, severity in conds]
        found = {}
        for m in models:
            found[m.label] = []
            maps = []
            for pixels in inputs:
                explained = explain_detections(m, pixels, [method], layer, DETECTION_SCORE, 1)
                det = explained.detections
                if len(det["scores"]):
                    label = int(det["labels"][0])
                    hit = bool(match(det["boxes"][:1], det["labels"][:1], target["boxes"], target["labels"]))
                    found[m.label].append({"class": m.class_names[label - 1], "score": round(float(det["scores"][0]), 4),
                                           "box": [round(float(v), 2) for v in det["boxes"][0]], "matched": hit})
                    maps.append(explained.maps[method][0])
                else:
                    found[m.label].append(None)
                    maps.append(np.zeros(pixels.shape[-2:], np.float32))
            arrays[f"image{i + 1}/{m.label}/heatmaps"] = np.stack(maps).astype(np.float16)
        stacked = torch.stack(inputs).permute(0, 2, 3, 1).numpy()
        arrays[f"image{i + 1}/inputs"] = stacked.astype(np.float16)
        record = {"image_id": int(target["image_id"]), "conditions": [condition_title(c) for c in conds],
                  "models": found}
        path = grid_figure(record, stacked, {label: arrays[f"image{i + 1}/{label}/heatmaps"] for label in found},
                           out / "figures" / f"detection_grid_{i + 1}.png",
                           f"Image {i + 1} ({settings.detection_data} {settings.split}, id {record['image_id']}): "
                           f"{len(target['boxes'])} object{'s' * (len(target['boxes']) != 1)}")
        record["figure"] = path.relative_to(out).as_posix()
        samples.append(record)
    write_npz(out / "detection_grid.npz", arrays)
    return {"method": method, "layer": layer, "score_threshold": DETECTION_SCORE, "samples": samples}


def grid_figure(record: dict, inputs, maps: dict, path: Path, title: str) -> Path:
    """Top row: the image per condition; then per detector its best detection's box, class and
    score over that detection's heatmap (vermillion and an x when it matches no object of its class)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from ..attention.plots import STYLE
    from ..explain.figures import blend
    from .figures import save_png
    from .grid import WRONG, _two_lines

    labels = list(record["models"])
    cols = len(record["conditions"])
    cell, gap, caption = 0.95, 0.05, 0.34  # inches, as the classifiers' grids
    left, right, top, bottom = 1.9, 0.1, 0.75, 0.05
    width = left + cols * (cell + gap) + right
    height = top + cell + gap + len(labels) * (cell + caption + gap) + bottom
    with plt.rc_context(STYLE):
        fig = plt.figure(figsize=(width, height))

        def axes(r: int, c: int):
            start = top if r == 0 else top + cell + gap + (r - 1) * (cell + caption + gap)
            ax = fig.add_axes(((left + c * (cell + gap)) / width, (height - start - cell) / height,
                               cell / width, cell / height))
            ax.set_axis_off()
            return ax

        for c, column in enumerate(record["conditions"]):
            ax = axes(0, c)
            ax.imshow(inputs[c])
            ax.set_title(_two_lines(column), fontsize=7.5, pad=3, linespacing=1.1)
            if c == 0:
                ax.text(-0.08, 0.5, "input", transform=ax.transAxes, ha="right", va="center", fontsize=8)
        for r, label in enumerate(labels, start=1):
            for c, found in enumerate(record["models"][label]):
                ax = axes(r, c)
                ax.imshow(blend(inputs[c], maps[label][c].astype(np.float32)) if found else inputs[c])
                if found:
                    x0, y0, x1, y1 = found["box"]
                    colour = "white" if found["matched"] else WRONG
                    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.2, ec=colour))
                    text = f"{'' if found['matched'] else 'x '}{found['class']}\n{found['score']:.2f}"
                else:
                    text = f"none >= {DETECTION_SCORE:g}"
                ax.text(0.5, -0.03, text, transform=ax.transAxes, ha="center", va="top", fontsize=7,
                        linespacing=1.05, color="black" if found and found["matched"] else WRONG)
                if c == 0:
                    ax.text(-0.08, 0.5, label.replace("_resnet", "\nresnet"), transform=ax.transAxes, ha="right",
                            va="center", fontsize=7.5)
        fig.suptitle(title, fontsize=9.5, y=1 - 0.08 / height, va="top")
        return save_png(fig, path)


# ------------------------------------------------------------------ figures ----------

def ap_severity_figure(results: dict, path: Path) -> Path:
    """Box AP against severity, one panel per corruption, one line per model ('clean': severity 0)."""
    import matplotlib.pyplot as plt

    from ..attention.plots import STYLE
    from .figures import MARKERS, colours, save_png

    corruptions, severities = results["corruptions"], results["severities"]
    palette = colours(results["models"])
    cols = min(5, len(corruptions))
    rows = -(-len(corruptions) // cols)
    x = [0] + list(severities)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols + 0.4, 2.1 * rows + 0.7), squeeze=False,
                                 sharex=True, sharey=True, layout="constrained")
        for ax, name in zip(axes.flat, corruptions):
            for i, (label, m) in enumerate(results["models"].items()):
                y = [m["clean_ap"]] + [m["ap"][name][str(s)] for s in severities]
                ax.plot(x, [None if v is None else 100 * v for v in y], color=palette[label],
                        marker=MARKERS[i % len(MARKERS)], markersize=3.5, lw=1.2, label=label)
            ax.set_title(name.replace("_", " "), fontsize=9)
            ax.set_xticks(x, ["clean"] + [str(s) for s in severities])
            ax.grid(axis="y", lw=0.4, alpha=0.5)
            ax.set_ylim(bottom=0)
        for ax in axes.flat[len(corruptions):]:
            ax.set_visible(False)
        for ax in axes[:, 0]:
            ax.set_ylabel("box AP (%)")
        for ax in axes[-1]:
            ax.set_xlabel("severity")
        handles, names = axes[0, 0].get_legend_handles_labels()
        # As many legend columns as the figure's width holds (about 0.08 inch a character).
        fits = int((2.3 * cols + 0.4) // (0.08 * max(map(len, names)) + 0.6))
        fig.legend(handles, names, loc="outside lower center", ncols=max(1, min(len(names), fits)))
        return save_png(fig, path)


def mpc_rpc_figure(results: dict, path: Path) -> Path:
    """Two panels of bars per model: clean AP beside mPC (box AP, %), and rPC (%)."""
    import matplotlib.pyplot as plt
    import numpy as np

    from ..attention.plots import STYLE
    from .figures import colours, save_png

    labels = list(results["models"])
    palette = colours(labels)
    models = results["models"]
    y = np.arange(len(labels))

    def value(v):
        return 0.0 if v is None else 100 * v

    with plt.rc_context(STYLE):
        fig, (left, right) = plt.subplots(1, 2, figsize=(8.4, 0.55 * len(labels) + 1.3), sharey=True,
                                          layout="constrained")
        clean = [value(models[label]["clean_ap"]) for label in labels]
        mpc = [value(models[label]["mpc"]) for label in labels]
        left.barh(y - 0.18, clean, height=0.34, color="white", edgecolor=[palette[label] for label in labels],
                  hatch="///", label="clean AP")
        left.barh(y + 0.18, mpc, height=0.34, color=[palette[label] for label in labels], label="mPC")
        for yi, a, b in zip(y, clean, mpc):
            left.annotate(f"{a:.1f}", (a, yi - 0.18), xytext=(3, 0), textcoords="offset points", va="center",
                          fontsize=7)
            left.annotate(f"{b:.1f}", (b, yi + 0.18), xytext=(3, 0), textcoords="offset points", va="center",
                          fontsize=7)
        left.set_xlim(0, max(clean + mpc + [1.0]) * 1.2)
        left.set_xlabel("box AP (%): clean (hatched), mPC (filled)")
        rpc = [models[label]["rpc"] for label in labels]
        right.barh(y, [value(v) for v in rpc], height=0.6, color=[palette[label] for label in labels])
        for yi, v in zip(y, rpc):
            right.annotate("undefined" if v is None else f"{100 * v:.1f}", (value(v), yi), xytext=(3, 0),
                           textcoords="offset points", va="center", fontsize=7)
        right.axvline(100, color="black", lw=0.8, ls="--")
        right.set_xlim(0, max([value(v) for v in rpc] + [100]) * 1.2)
        right.set_xlabel("rPC = mPC / clean AP (%)")
        left.set_yticks(y, labels)
        left.invert_yaxis()
        return save_png(fig, path)


# ------------------------------------------------------------------ section ----------

def sentences(report: dict) -> list[str]:
    """The summary's sentences on the detectors: who keeps most of its clean AP under corruption."""
    det = report.get("detection")
    if not det:
        return []
    models = det["robustness"]["models"]
    n = next(iter(models.values()))["n"]
    found = [f"{label}: clean box AP {100 * m['clean_ap']:.1f}%, mPC {100 * m['mpc']:.1f}%"
             + (f", rPC {100 * m['rpc']:.1f}%" if m["rpc"] is not None else ", rPC undefined (no clean AP)")
             for label, m in models.items() if m["clean_ap"] is not None and m["mpc"] is not None]
    text = [f"Detectors on the first {n} {det['data']} {det['split']} images: " + "; ".join(found) + "."] if found else []
    # rPC of a detector that barely detects is a ratio of two near-zero APs: not compared.
    kept = {label: m["rpc"] for label, m in models.items() if m["rpc"] is not None and m["clean_ap"] >= MIN_CLEAN_AP}
    left_out = [label for label, m in models.items() if m["rpc"] is not None and label not in kept]
    if len(kept) > 1:
        best = max(kept, key=kept.get)
        text.append(f"{best} keeps the largest share of its clean box AP under corruption (rPC "
                    f"{100 * kept[best]:.1f}%); the AP differences rest on {n} images"
                    + (f"; {', '.join(left_out)} left out of this comparison (clean AP under "
                       f"{100 * MIN_CLEAN_AP:g}%)." if left_out else "."))
    return text


def section(report: dict, doc) -> None:
    """Models, AP under corruption, mPC / rPC, figures."""
    det = report["detection"]
    results = det["robustness"]
    labels = list(results["models"])
    n = next(iter(results["models"].values()))["n"]
    severities = ", ".join(str(s) for s in results["severities"])
    doc.section("detection", "Detection")
    doc.paragraph(f"Each detector sees the first {n} images of the {results['data']} {results['split']} split, whole "
                  f"(corruptions act on the full image, before the detector's resize), clean and under "
                  f"{len(results['corruptions'])} corruptions at severities {severities} ({results['backend']} "
                  "backend), scored by COCO box AP [0.5:0.95] (pycocotools). As in Michaelis et al. (2019), mPC is the "
                  "mean AP over corruptions and severities, rPC = mPC / clean AP.")
    rows = det["models"]
    doc.table(Table(
        [Column("model"), Column("detector"), Column("backbone"), Column("parameters", True, "min"),
         Column("input (px)", True), Column("val box AP, training (%)", True, "max")],
        [[text(row["label"], code=True), text(row["family"]), text(row["backbone"], code=True),
          number(report, pointer("detection", "models", i, "params"), 0, thousands=True),
          text(f"{row['min_size']}-{row['max_size']}" if row["min_size"] != row["max_size"] else row["min_size"]),
          number(report, pointer("detection", "models", i, "train_bbox_AP"), 1, 100)] for i, row in enumerate(rows)],
        caption="Detector checkpoints: family, backbone, parameters, the detector's resize, and the box AP its "
                "training logged on its validation images."))
    at = ("detection", "robustness", "models")
    masks = [label for label in labels if "segm_AP" in results["models"][label]["summary"]]
    columns = [Column("model"), Column("clean AP (%)", True, "max"), Column("AP50 (%)", True, "max"),
               Column("mPC (%)", True, "max"), Column("rPC (%)", True, "max")]
    body = [[text(label, code=True), number(report, pointer(*at, label, "clean_ap"), 1, 100),
             number(report, pointer(*at, label, "clean", "bbox_AP50"), 1, 100),
             number(report, pointer(*at, label, "mpc"), 1, 100), number(report, pointer(*at, label, "rpc"), 1, 100)]
            for label in labels]
    if masks:
        columns += [Column("mask AP (%)", True, "max"), Column("mask mPC (%)", True, "max"),
                    Column("mask rPC (%)", True, "max")]
        for row, label in zip(body, labels):
            row += [number(report, pointer(*at, label, "summary", "segm_AP", key), 1, 100)
                    for key in ("clean", "mpc", "rpc")]
    doc.table(Table(columns, body, caption="Performance under corruption: clean AP, mPC and rPC (box AP"
                                           + (", and mask AP for Mask R-CNN" if masks else "") + ").",
                    note="Bold: best in its column. rPC is undefined (a dash) when the clean AP is 0."))
    corruptions = results["corruptions"]
    doc.table(Table(
        [Column("model"), Column("clean", True, "max")] + [Column(c.replace("_", " "), True, "max") for c in corruptions],
        [[text(label, code=True), number(report, pointer(*at, label, "clean_ap"), 1, 100)]
         + [number(report, pointer(*at, label, "mean_ap", c), 1, 100) for c in corruptions] for label in labels],
        caption=f"Box AP (%) per corruption, averaged over severities {severities}."))
    figures = det.get("figures") or {}
    if "detection_ap_severity" in figures:
        doc.figure(figures["detection_ap_severity"], "Box AP against severity for each corruption, one line per "
                   "detector; 'clean' is severity 0.", "box AP vs severity per corruption")
    if "detection_mpc_rpc" in figures:
        doc.figure(figures["detection_mpc_rpc"], "Left: clean box AP (hatched) and mPC (filled) per detector. Right: "
                   "rPC, the share of the clean AP kept under corruption; the dashed line is 100%.", "mPC and rPC bars")
    grid = det.get("grid") or {}
    if grid.get("samples"):
        doc.heading("Detections and their heatmaps, clean and corrupted")
        doc.paragraph(f"For a few images, each detector's best detection (score at least {grid['score_threshold']:g}) "
                      f"with its {grid['method']} heatmap at {grid['layer']} (pytorch-grad-cam's box-score target: "
                      "that detection's score), on the clean image and under each corruption; the same corrupted "
                      "image for every detector. White box: the detection matches an object of its class (IoU at "
                      "least 0.5); vermillion with an x: it does not. Inputs and maps: detection_grid.npz.")
        for sample in grid["samples"]:
            doc.figure(sample["figure"], f"Image id {sample['image_id']}: best detection and its {grid['method']} "
                       "heatmap per detector (rows) and condition (columns).", "detections and heatmaps grid")
