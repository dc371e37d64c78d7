"""Ablation tables from a set of checkpoints, grouped by the model options stored in each.

* placement: which blocks of each stage carry attention (``all`` / ``first`` / ``last``);
* EMCA sources: S (``emca_stages``: how many earlier stages feed a module) and N
  (``emca_blocks``: the last block, or all blocks, of those stages).

Rows are attention types (ECA, EMCA-ECA, ...), columns the settings; a cell holds the clean
top-1 (and mCE when robustness results are given) of the checkpoint with that setting, and is
empty where no checkpoint has it, so a partial set still gives a table, and says what is missing.
"""

from __future__ import annotations

from pathlib import Path

from ..outputs import write_dict_csv, write_json, write_text

PLACEMENTS = ("all", "first", "last")
SOURCES = ((0, 1), (1, 1), (1, "all"), ("all", 1), ("all", "all"))  # (S, N); S = 0 is plain attention
DASH = "\u2013"


def setting(row: dict, ablation: str):
    """A model row's setting in ``ablation`` (``None``: not part of it, e.g. a plain ResNet)."""
    if row["attention"] is None:
        return None
    if ablation == "placement":
        return row["placement"]
    stages = row["emca_stages"]
    if not row["emca"] or stages is None:  # None: the released model, whose sources are fixed
        return None
    return (stages, 1 if stages == 0 else row["emca_blocks"])  # N is moot without sources


def setting_name(value, ablation: str) -> str:
    return value if ablation == "placement" else f"S={value[0]}, N={value[1]}"


def ablation_table(rows: list[dict], ablation: str, robustness: dict | None = None) -> dict:
    """``{"ablation", "settings", "present", "missing", "cells": [{"kind", "setting", "label", "top1", "mce"}]}``
    from model rows (:func:`emca_vis.report.models.model_rows`)."""
    order = list(PLACEMENTS) if ablation == "placement" else [list(s) for s in SOURCES]
    scores = (robustness or {}).get("models", {})
    cells = []
    for row in rows:
        value = setting(row, ablation)
        if value is None:
            continue
        value = list(value) if isinstance(value, tuple) else value
        mce = scores.get(row["label"], {}).get("mce")
        cells.append({"kind": row["kind"], "setting": value, "label": row["label"],
                      "top1": (row.get("clean") or {}).get("top1"), "mce": mce})
    present = [s for s in order if any(c["setting"] == s for c in cells)]
    present += [c["setting"] for c in cells if c["setting"] not in order and c["setting"] not in present]
    return {"ablation": ablation, "settings": [setting_name(_tuple(s), ablation) for s in present],
            "present": [setting_name(_tuple(s), ablation) for s in present],
            "missing": [setting_name(_tuple(s), ablation) for s in order if s not in present],
            "cells": [{**c, "setting": setting_name(_tuple(c["setting"]), ablation)} for c in cells]}


def _tuple(value):
    return tuple(value) if isinstance(value, list) else value


def markdown(table: dict) -> str:
    """Kinds as rows, present settings as columns: ``top-1 %`` or ``top-1 % / mCE``."""
    with_mce = any(c["mce"] is not None for c in table["cells"])
    kinds = list(dict.fromkeys(c["kind"] for c in table["cells"]))
    unit = "clean top-1 (%) / mCE (%)" if with_mce else "clean top-1 (%)"
    lines = [f"{table['ablation']} ablation, {unit}",
             "| type | " + " | ".join(table["settings"]) + " |", "|---|" + "---:|" * len(table["settings"])]
    for kind in kinds:
        cells = []
        for name in table["settings"]:
            found = [c for c in table["cells"] if c["kind"] == kind and c["setting"] == name]
            cells.append(" ; ".join(_value(c, with_mce) for c in found) if found else DASH)
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _percent(value) -> str:
    return DASH if value is None else f"{100 * value:.1f}"


def _value(cell: dict, with_mce: bool) -> str:
    return f"{_percent(cell['top1'])} / {_percent(cell['mce'])}" if with_mce else _percent(cell["top1"])


def coverage(table: dict) -> str:
    """One line saying which settings the checkpoints cover."""
    present = "; ".join(table["present"]) or "none"
    missing = "; ".join(table["missing"]) or "none"
    return f"{table['ablation']} settings present: {present}; missing: {missing}"


def write(table: dict, out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.md", out / f"{name}.csv", out / f"{name}.json"]
    write_text(paths[0], markdown(table) + "\n\n" + coverage(table) + "\n")
    write_dict_csv(paths[1], table["cells"], fields=["kind", "setting", "label", "top1", "mce"])
    write_json(paths[2], table)
    return paths


def main(ablation: str, argv: list[str] | None = None, description: str = "") -> int:
    """The command line of ``analyses/placement_ablation.py`` and ``analyses/source_ablation.py``."""

    from ..errors import UserError
    from ..inputs import CHECKPOINT_HELP, load_models
    from ..options import Parser, positive_int
    from ..outputs import check_out
    from ..robustness.results import read_results
    from .models import architecture, clean_accuracy, training_summary

    parser = Parser(description=description)
    parser.add_argument("--checkpoint", nargs="+", help=CHECKPOINT_HELP)
    parser.add_argument("--data", default="shapes")
    parser.add_argument("--split", default="test")
    parser.add_argument("--n", type=positive_int, default=500, help="images for clean top-1")
    parser.add_argument("--metadata", action="store_true",
                        help="use each checkpoint's recorded validation top-1 instead of measuring")
    parser.add_argument("--robustness", help="results JSON of python -m emca_vis.robustness (or the report's "
                                             "robustness.json) to add mCE, matched by model label")
    parser.add_argument("--out", default="runs/analyses", help="output folder")
    args = parser.parse_args(argv)
    check_out(args.out, folder=True, files=[f"{ablation}_ablation.{suffix}" for suffix in ("md", "csv", "json")])
    models = load_models(args.checkpoint)
    if args.metadata:
        accuracy = {m.label: {"top1": training_summary(m.meta)["val_top1"]} for m in models}
    else:
        accuracy = clean_accuracy(models, args.data, args.split, args.n)
    rows = [{"label": m.label, **architecture(m.meta), "clean": accuracy.get(m.label)} for m in models]
    robustness = None
    if args.robustness:
        robustness = read_results(args.robustness)
    table = ablation_table(rows, ablation, robustness)
    if not table["cells"]:
        raise UserError(f"none of the checkpoints is part of the {ablation} ablation "
                        f"({'attention models' if ablation == 'placement' else 'EMCA models'} needed)")
    paths = write(table, Path(args.out), f"{ablation}_ablation")
    print(markdown(table))
    print(coverage(table))
    for path in paths:
        print(f"wrote {path}")
    return 0
