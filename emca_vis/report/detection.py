"""The report's detection part: detector checkpoints scored by COCO AP clean and under
corruptions (mPC, rPC; :mod:`emca_vis.detection.robustness`), with its figures and section.

:func:`compute` runs the analyses and draws the figures (the compute stage); :func:`section`
renders ``report["detection"]`` (the render stage, nothing recomputed).
"""

from __future__ import annotations

from pathlib import Path

from ..detection.names import parse_detector_name
from .tables import Column, Table, number, pointer, text

FAMILY_NAMES = {"fasterrcnn": "Faster R-CNN", "maskrcnn": "Mask R-CNN", "retinanet": "RetinaNet"}
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
            "figures": {key: p.relative_to(out).as_posix() for key, p in figures.items()}}


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
        fig.legend(handles, names, loc="outside lower center", ncols=min(len(names), 3))
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
    kept = {label: m["rpc"] for label, m in models.items() if m["rpc"] is not None}
    if len(kept) > 1:
        best = max(kept, key=kept.get)
        text.append(f"{best} keeps the largest share of its clean box AP under corruption (rPC "
                    f"{100 * kept[best]:.1f}%); the AP differences rest on {n} images.")
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
