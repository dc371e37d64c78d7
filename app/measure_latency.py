"""Interaction latency of the app: seconds per rerun after changing the method or the severity.

    python app/measure_latency.py [--models 3 7] [--repeats 2]
    python app/measure_latency.py --checkpoint-dir DIR [--image photo.jpg] [--models 3]

Runs app/main.py through Streamlit's AppTest (the script as the server runs it, without the
browser's drawing), models already loaded: the demo checkpoints, or the first ``--models``
checkpoints of ``--checkpoint-dir`` (e.g. ImageNet-size ResNet-50s) on the shapes sample or
``--image``. Each change is a new (method or severity) setting, so its heatmaps are computed,
not taken from the cache; the "cached" row goes back to settings seen before.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

APP = Path(__file__).resolve().parent / "main.py"
METHODS = ("gradcam++", "xgradcam", "layercam", "hirescam", "gradcam")
DEMO = ("resnet18", "resnet18_se", "resnet18_eca", "resnet18_srm", "resnet18_emca_se", "resnet18_emca_eca",
        "resnet18_emca_srm")


def timed(at) -> float:
    start = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - start
    if at.exception:
        raise RuntimeError(at.exception[0].value)
    if at.error:
        raise RuntimeError(at.error[0].value)
    return elapsed


def measure(models: int, repeats: int, app: Path = APP, checkpoint_dir: Path | None = None,
            image: Path | None = None) -> dict[str, list[float]]:
    from streamlit.testing.v1 import AppTest

    if checkpoint_dir is not None:
        os.environ["EMCA_VIS_CHECKPOINT_ROOT"] = str(checkpoint_dir)
    if image is not None:
        os.environ["EMCA_VIS_IMAGE_DIR"] = str(image.parent)
    at = AppTest.from_file(str(app), default_timeout=600)
    at.run()
    if checkpoint_dir is None:
        folder = "demo checkpoints"
        chosen = list(DEMO[:models]) if models != 3 else ["resnet18", "resnet18_eca", "resnet18_emca_eca"]
    else:
        folder = checkpoint_dir.name
        at.sidebar.selectbox(key="folder").set_value(folder)
        at.run()
        chosen = list(at.sidebar.multiselect(key=f"models:{folder}").options)[:models]
    if image is not None:
        at.sidebar.radio(key="source").set_value("Image folder")
        at.run()
        at.sidebar.selectbox(key="folder_image").set_value(image)
    at.sidebar.multiselect(key=f"models:{folder}").set_value(chosen)
    timed(at)  # loads the models, first heatmaps
    times: dict[str, list[float]] = {"method": [], "severity": [], "cached": []}
    for repeat in range(repeats):
        corruption = ("gaussian_noise", "fog")[repeat % 2]  # a new corruption per repeat: nothing cached
        at.sidebar.selectbox(key="corruption").set_value(corruption)
        at.sidebar.slider(key="severity").set_value(3)
        at.sidebar.selectbox(key="method").set_value("gradcam")
        timed(at)
        for method in METHODS[:-1]:
            at.sidebar.selectbox(key="method").set_value(method)
            times["method"].append(timed(at))
        for severity in (1, 2, 4, 5):
            at.sidebar.slider(key="severity").set_value(severity)
            times["severity"].append(timed(at))
        for method in METHODS[:2]:  # seen at severity 3 above
            at.sidebar.slider(key="severity").set_value(3)
            at.sidebar.selectbox(key="method").set_value(method)
            times["cached"].append(timed(at))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, nargs="+", default=[3, 7])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--checkpoint-dir", type=Path, help="compare this folder's checkpoints (default: the demo ones)")
    parser.add_argument("--image", type=Path, help="an image file to explain (default: the shapes sample)")
    parser.add_argument("--app", type=Path, default=APP, help="the app script (default: app/main.py beside this file)")
    args = parser.parse_args()
    sys.path.insert(0, str(args.app.resolve().parent))
    print("| models | change | median s | p90 s | max s | reruns |\n|---:|---|---:|---:|---:|---:|")
    for count in args.models:
        for change, values in measure(count, args.repeats, args.app, args.checkpoint_dir, args.image).items():
            print(f"| {count} | {change} | {statistics.median(values):.3f} | {np.percentile(values, 90):.3f} "
                  f"| {max(values):.3f} | {len(values)} |", flush=True)


if __name__ == "__main__":
    main()
