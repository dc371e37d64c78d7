"""Demo checkpoints: small plain, SE, ECA, SRM and EMCA ResNet-18s trained on ``shapes``, and
two small Faster R-CNNs (plain and EMCA-ECA backbones) trained on ``multishapes``.

Every tool uses the classifiers when given no checkpoint; the app offers both. They live in
``emca_vis/demo_checkpoints`` and its ``detection`` folder (committed: 9 small files), or
wherever ``EMCA_VIS_DEMO_DIR`` points.

    python -m emca_vis.demo              # list them with their validation accuracy
    python -m emca_vis.demo --train      # (re)train the missing ones on the CPU
    python -m emca_vis.demo --sample x.png   # and write a test image to try the tools on
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .checkpoint import load_checkpoint
from .errors import UserError, run_cli
from .options import Parser
from .outputs import atomic_open, check_out

DEMO_MODELS = ("resnet18", "resnet18_se", "resnet18_eca", "resnet18_srm", "resnet18_emca_se", "resnet18_emca_eca",
               "resnet18_emca_srm")
# Small enough to train on two CPU cores in minutes; the CIFAR stem keeps layer4 at 8x8 for CAMs.
DEMO_TRAIN_ARGS = ["--data", "shapes", "--width", "0.125", "--stem", "cifar", "--epochs", "6", "--batch-size", "64",
                   "--optimizer", "adamw", "--lr", "5e-3", "--weight-decay", "0.05", "--no-decay-norm-bias",
                   "--warmup-epochs", "0.3", "--label-smoothing", "0.05", "--workers", "1"]

# Two quarter-width Faster R-CNNs on 128 px multishapes, without and with EMCA: the app's demo
# detectors and the trained detectors of the tests (about 12 images/s on one core, 1,600 steps).
# The committed ones are the 4th epoch of runs started with --epochs 6; the step at epoch 5 is
# never reached in 4 epochs, so these arguments repeat them.
DEMO_DETECTORS = ("fasterrcnn_resnet18_fpn", "fasterrcnn_resnet18_emca_eca_fpn")
DEMO_DETECTOR_TRAIN_ARGS = ["--task", "detection", "--data", "multishapes", "--image-size", "128", "--width", "0.25",
                            "--fpn-channels", "32", "--representation-size", "128", "--box-batch-size-per-image",
                            "128", "--proposals", "300", "--train-size", "1600", "--val-size", "100",
                            "--batch-size", "4", "--epochs", "4", "--lr", "0.02", "--schedule", "step",
                            "--milestones", "5", "--warmup-epochs", "0.1", "--workers", "0"]


def demo_dir() -> Path:
    return Path(os.environ.get("EMCA_VIS_DEMO_DIR", Path(__file__).parent / "demo_checkpoints"))


def demo_detector_dir() -> Path:
    return demo_dir() / "detection"


def demo_checkpoints() -> list[Path]:
    """The demo checkpoint files, in a fixed order; an error saying how to get them if absent."""
    paths = [demo_dir() / f"{name}.safetensors" for name in DEMO_MODELS]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise UserError(f"demo checkpoints missing in {demo_dir()}: {', '.join(missing)}; "
                        "run `python -m emca_vis.demo --train` or pass checkpoints explicitly")
    return paths


def train_missing(seed: int = 0) -> None:
    from .train import build_parser, train

    for folder, names, arguments in ((demo_dir(), DEMO_MODELS, DEMO_TRAIN_ARGS),
                                     (demo_detector_dir(), DEMO_DETECTORS, DEMO_DETECTOR_TRAIN_ARGS)):
        for name in names:
            target = folder / f"{name}.safetensors"
            if target.exists():
                continue
            run_dir = folder / "runs" / name
            print(f"training demo model {name} -> {target}", flush=True)
            resume = ["--resume"] if any((run_dir / "resume").glob("step-*")) else []  # an interrupted one
            train(build_parser().parse_args(["--model", name, "--out", str(run_dir), "--seed", str(seed),
                                             *arguments, *resume]))
            # A copy (then a rename, so a kill leaves no half file): resuming a finished run rewrites
            # best only when its last epoch is the best, so the run keeps its own.
            partial = target.with_name(f".{target.name}.partial")
            shutil.copyfile(run_dir / "best.safetensors", partial)
            partial.replace(target)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m emca_vis.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--train", action="store_true", help="train the missing demo checkpoints")
    parser.add_argument("--sample", metavar="PNG", help="also write a 160 px test image of the shapes dataset")
    args = parser.parse_args(argv)
    if args.sample:
        check_out(args.sample, option="--sample")
    if args.train:
        train_missing()
    print(demo_table())
    if args.sample:
        from .data.shapes import render_sample

        Path(args.sample).parent.mkdir(parents=True, exist_ok=True)
        from PIL import Image

        image_format = Image.registered_extensions().get(Path(args.sample).suffix.lower(), "PNG")
        with atomic_open(args.sample, "wb") as handle:
            render_sample(0, "test", 7, 160).image.save(handle, format=image_format)
        print(f"wrote {args.sample}")
    return 0


def demo_table() -> str:
    """Markdown tables of the demo checkpoints, from their metadata (weights checked too)."""
    lines = ["| model | parameters | val top-1 (%) | val top-5 (%) | best epoch (of 6) |", "|---|---:|---:|---:|---:|"]
    for path in demo_checkpoints():
        model, meta = load_checkpoint(path)
        metrics = meta["metrics"]
        lines.append(f"| {meta['model']} | {sum(p.numel() for p in model.parameters()):,} | "
                     f"{metrics['val_top1']:.2f} | {metrics['val_top5']:.2f} | {metrics['epoch']} |")
    detectors = [demo_detector_dir() / f"{name}.safetensors" for name in DEMO_DETECTORS]
    if all(path.exists() for path in detectors):
        lines += ["", "| detector | parameters | val box AP | val AP50 | best epoch (of 4) |", "|---|---:|---:|---:|---:|"]
        for path in detectors:
            model, meta = load_checkpoint(path, task="detection")
            metrics = meta["metrics"]
            lines.append(f"| {meta['model']} | {sum(p.numel() for p in model.parameters()):,} | "
                         f"{metrics['val_bbox_AP']:.3f} | {metrics['val_bbox_AP50']:.3f} | {metrics['epoch']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
