"""Every tool at ImageNet scale: seconds per image and peak memory with 1000-class ResNet-50s at 224 px.

    python benchmarks/scale.py [--work runs/bench/scale] [--models 3] [--images 4] [--app-repeats 1]

Writes three ResNet-50 checkpoints with random weights (plain, ECA and EMCA-ECA; 1000 classes,
so ImageNet's class names) and an ImageNet-layout folder (``val/<synset>/``: the first folders
hold scikit-image's sample photographs with a Pascal VOC box each, the other synsets a tiny
placeholder), then runs each tool in its own process and reads that process's peak resident
memory (``wait4``). Seconds per image are the tool's wall time, model loading included, over
the images it processed. The app row is ``app/measure_latency.py`` with the same checkpoints:
the median re-render after a method or a severity change.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("resnet50", "resnet50_eca", "resnet50_emca_eca")
PHOTOS = ("chelsea", "astronaut", "coffee", "rocket")
CORRUPTIONS = ("gaussian_noise", "fog")
SEVERITY = "3"


def prepare(work: Path, models: int, images: int) -> tuple[list[Path], list[Path], Path, Path]:
    """Checkpoints, photographs, an ImageNet-layout folder and its VOC boxes under ``work``."""
    import numpy as np
    import torch
    from PIL import Image
    from skimage import data

    from emca_vis.checkpoint import save_checkpoint
    from emca_vis.models import create_model

    checkpoints = []
    for name in MODELS[:models]:
        path = work / "checkpoints" / f"{name}.safetensors"
        if not path.exists():
            torch.manual_seed(0)
            save_checkpoint(path, create_model(name, num_classes=1000), dataset="random weights (benchmark)")
        checkpoints.append(path)
    photos = []
    for name in (PHOTOS * images)[:images]:
        path = work / "photos" / f"{name}.png"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = getattr(data, name)()
            Image.fromarray(pixels if pixels.ndim == 3 else np.stack([pixels] * 3, -1)).save(path)
        photos.append(path)
    imagenet, boxes = work / "imagenet", work / "boxes"
    placeholder = work / "placeholder.png"
    Image.new("RGB", (8, 8), (128, 128, 128)).save(placeholder)
    boxes.mkdir(parents=True, exist_ok=True)
    for index in range(1000):  # ImageNet's 1000 synset folders, in ImageNet's (sorted) order
        folder = imagenet / "val" / f"n{index:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        if index < len(photos):
            image = folder / f"photo{index}.png"
            if not image.exists():
                os.link(photos[index], image)
            width, height = Image.open(image).size
            (boxes / f"photo{index}.xml").write_text(
                f"<annotation><size><width>{width}</width><height>{height}</height></size><object><name>n{index:08d}"
                f"</name><bndbox><xmin>{width // 4}</xmin><ymin>{height // 4}</ymin><xmax>{3 * width // 4}</xmax>"
                f"<ymax>{3 * height // 4}</ymax></bndbox></object></annotation>")
        elif not (folder / "x.png").exists():
            os.link(placeholder, folder / "x.png")
    return checkpoints, photos, imagenet, boxes


def run(command: list[str]) -> tuple[float, float, int, str]:
    """Wall seconds, peak resident GB, exit status and output tail of ``command`` in its own process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - start, usage.ru_maxrss / 2**20, process.returncode, output  # ru_maxrss: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench" / "scale")
    parser.add_argument("--models", type=int, choices=[1, 2, 3], default=3)
    parser.add_argument("--images", type=int, default=4, help="photographs in the folder (gradcam explains the first)")
    parser.add_argument("--app-repeats", type=int, default=1, help="rounds of app changes (0: no app row)")
    args = parser.parse_args()
    checkpoints, photos, imagenet, boxes = prepare(args.work, args.models, args.images)
    out = args.work / "out"
    ckpt = [str(p) for p in checkpoints]
    n = str(len(photos))
    py = [sys.executable, "-m"]
    folder = ["--data", f"imagenet:{imagenet}", "--split", "val"]
    tools = {
        "gradcam (default methods, 1 photo)": (py + ["emca_vis.gradcam", "--image", str(photos[0]), "--checkpoint",
                                                     *ckpt, "--out", str(out / "gradcam" / "g.png")], 1),
        "gradcam evaluate (gradcam)": (py + ["emca_vis.gradcam", "evaluate", "--checkpoint", *ckpt, *folder,
                                             "--boxes", str(boxes), "--n", n, "--batch-size", n,
                                             "--out", str(out / "evaluate")], len(photos)),
        "attention": (py + ["emca_vis.attention", "--checkpoint", *ckpt, *folder, "--n", n, "--batch-size", n,
                            "--out", str(out / "attention")], len(photos)),
        f"robustness ({len(CORRUPTIONS)} corruptions x 1 severity)": (
            py + ["emca_vis.robustness", "--checkpoint", *ckpt, *folder, "--n", n, "--batch-size", n,
                  "--corruptions", *CORRUPTIONS, "--severities", SEVERITY, "--out", str(out / "robustness.json")],
            len(photos) * (1 + len(CORRUPTIONS))),
        "report": (py + ["emca_vis.report", "--checkpoint", *ckpt, *folder, "--out", str(out / "report"),
                         "--n-clean", n, "--n", n, "--corruptions", CORRUPTIONS[0], "--severities", SEVERITY,
                         "--n-explain", n, "--boxes", str(boxes), "--no-faithfulness", "--samples", "1",
                         "--grid-corruptions", CORRUPTIONS[0], "--grid-severities", SEVERITY,
                         "--n-attention", n, "--throughput-batch", n, "--repeats", "1", "--batch-size", n],
                   len(photos)),
    }
    print(f"ResNet-50s at 224 px, 1000 classes: {', '.join(MODELS[:args.models])}; {len(photos)} photographs; "
          f"{os.cpu_count()} CPUs, torch threads: default; load average before: "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}\n")
    print("| tool | images | seconds | s / image / model | peak GB |\n|---|---:|---:|---:|---:|", flush=True)
    for name, (command, images) in tools.items():
        seconds, peak, status, output = run(command)
        if status:
            print(f"| {name} | failed (exit {status}): {output.strip().splitlines()[-1][:120]} | | | |", flush=True)
            continue
        print(f"| {name} | {images} | {seconds:.1f} | {seconds / images / len(ckpt):.2f} | {peak:.2f} |", flush=True)
    if args.app_repeats:
        command = [sys.executable, str(ROOT / "app" / "measure_latency.py"), "--checkpoint-dir",
                   str(checkpoints[0].parent), "--image", str(photos[0]), "--models", str(args.models),
                   "--repeats", str(args.app_repeats)]
        seconds, peak, status, output = run(command)
        rows = {m.group(1): m.groups()[1:] for m in re.finditer(r"\| \d+ \| (\w+) \| ([\d.]+) \| ([\d.]+) \|", output)}
        if status or not rows:
            print(f"| app | failed (exit {status}): {output.strip().splitlines()[-1][:120]} | | | |")
        else:
            print(f"\napp re-render with {args.models} ResNet-50s (median / p90 s): "
                  + "; ".join(f"{change} {median} / {p90}" for change, (median, p90) in rows.items())
                  + f"; app process peak {peak:.2f} GB")
    print(f"\nload average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
