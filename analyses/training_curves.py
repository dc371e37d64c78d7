"""Top-1 training curves of several runs, from the logs ``python -m emca_vis.train`` writes.

    python analyses/training_curves.py [--checkpoint a b c] [--log runs/x/metrics.csv ...] --out figures/

A checkpoint's log is looked for beside it, in its run folder (``train_args.out`` in its
metadata) and under the demo folder's ``runs/<model>/``; ``--log`` adds logs directly (a
``metrics.csv``/``metrics.jsonl`` or its folder, labelled by the folder's name). Checkpoints
without a log appear as one marker (their saved epoch and validation top-1). Writes
``training_curves.png`` and ``training_curves.csv`` (one row per run and epoch).
"""

from __future__ import annotations

from pathlib import Path

from emca_vis.errors import UserError, run_cli
from emca_vis.inputs import load_models
from emca_vis.options import Parser
from emca_vis.outputs import check_out, write_csv
from emca_vis.report.curves import training_curves


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", nargs="+", help="checkpoints (default: the demo checkpoints)")
    parser.add_argument("--log", action="append", default=[], help="a training log or its run folder (repeatable)")
    parser.add_argument("--out", default="runs/analyses", help="output folder")
    args = parser.parse_args(argv)
    check_out(args.out, folder=True, files=["training_curves.png", "training_curves.csv"])
    models = [] if args.log and not args.checkpoint else load_models(args.checkpoint)
    logs = {_name(Path(p)): Path(p) for p in args.log}
    out = Path(args.out)
    result = training_curves(models, out / "training_curves.png", logs)
    if result["figure"] is None:
        raise UserError("no training log and no checkpoint metrics found; pass --log runs/<run>/metrics.csv")
    write_csv(out / "training_curves.csv",
              [[label, row.get("epoch"), row.get("train_top1"), row.get("val_top1"), row.get("val_top5"),
                result["logs"][label]] for label, rows in result["curves"].items() for row in rows],
              header=["run", "epoch", "train_top1", "val_top1", "val_top5", "log"])
    for label, path in result["logs"].items():
        print(f"{label}: {path}")
    if result["missing"]:
        print(f"no training log for: {', '.join(result['missing'])} (shown as their checkpoint's final epoch)")
    print(f"wrote {result['figure']}\nwrote {out / 'training_curves.csv'}")
    return 0


def _name(path: Path) -> str:
    return (path if path.is_dir() else path.parent).name or str(path)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
