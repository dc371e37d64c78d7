"""The report's heatmap-stability section, when its robustness run had ``--stability``."""

from __future__ import annotations

from .tables import Column, Table, number, pointer, text

MEASURES = (("rank_correlation", "Spearman \u03c1", 3, 1, "max"), ("top_iou", "top-15% IoU", 3, 1, "max"),
            ("peak_shift", "peak shift (% diag.)", 1, 100, "min"), ("pointing_retained", "PG retained (%)", 1, 100,
                                                                     "max"),
            ("flat", "flat maps (%)", 1, 100, "min"))


def stability_section(report: dict, doc) -> None:
    found = (report.get("robustness") or {}).get("stability")
    if not found:
        return
    doc.section("stability", "Heatmap stability under corruption")
    n = next(iter(report["robustness"]["models"].values()))["n"]
    doc.paragraph(f"The {found['method']} heatmap of the true class in each corrupted image against the one in the "
                  f"clean image, on the same {n} images as the robustness table: Spearman's rank correlation over "
                  "the pixels, IoU of the 15% most salient pixels, the shift of the maximum (share of the image "
                  "diagonal), and the share of clean pointing-game hits still hits. Each image's values are first "
                  "averaged over the family's corruptions and severities. A flat map (the class evidence vanished) "
                  "has no order, region or peak: it is left out of those means and counted in the last column.")
    for family, members in found["families"].items():
        rows = []
        for label in found["models"]:
            at = ("robustness", "stability", "models", label, "families", family, "all")
            cells = [text(label, code=True)]
            for key, _, digits, scale, _ in MEASURES:
                cells.append(number(report, pointer(*at, key, "mean"), digits, scale,
                                    ci=(pointer(*at, key, "ci_low"), pointer(*at, key, "ci_high"))))
            rows.append(cells)
        doc.table(Table([Column("model")] + [Column(title, True, best) for _, title, _, _, best in MEASURES], rows,
                        caption=f"{family.capitalize()} ({', '.join(c.replace('_', ' ') for c in members)}): mean "
                                "over severities with 95% bootstrap intervals over images.",
                        note="Bold: best in its column."))
    figure = report.get("figures", {}).get("stability")
    if figure:
        doc.figure(figure, "Each measure against severity per corruption family, one line per model; bands: 95% "
                           "bootstrap intervals; severity 0 is the clean image.", "heatmap stability vs severity")
