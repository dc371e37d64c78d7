"""Interaction latency of the app: seconds per rerun after changing the method or the severity.

    python app/measure_latency.py [--models 3 7] [--repeats 2]

Runs app/main.py through Streamlit's AppTest (the script as the server runs it, without the
browser's drawing) with the demo checkpoints, models already loaded. Each change is a new
(method or severity) setting, so its heatmaps are computed, not taken from the cache; the
"cached" row goes back to settings seen before.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parent / "main.py"
METHODS = ("gradcam++", "xgradcam", "layercam", "hirescam", "gradcam")
DEMO = ("resnet18", "resnet18_se", "resnet18_eca", "resnet18_srm", "resnet18_emca_se", "resnet18_emca_eca",
        "resnet18_emca_srm")


def timed(at: AppTest) -> float:
    start = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - start
    if at.exception:
        raise RuntimeError(at.exception[0].value)
    return elapsed


def measure(models: int, repeats: int) -> dict[str, list[float]]:
    at = AppTest.from_file(str(APP), default_timeout=300)
    at.run()
    at.sidebar.multiselect(key="models:demo checkpoints").set_value(list(DEMO[:models]) if models != 3 else
                                                                     ["resnet18", "resnet18_eca", "resnet18_emca_eca"])
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
    args = parser.parse_args()
    print("| models | change | median s | max s | reruns |\n|---:|---|---:|---:|---:|")
    for count in args.models:
        for change, values in measure(count, args.repeats).items():
            print(f"| {count} | {change} | {statistics.median(values):.3f} | {max(values):.3f} | {len(values)} |")


if __name__ == "__main__":
    main()
