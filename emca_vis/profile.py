"""Efficiency table: parameters, GFLOPs and measured throughput, side by side in one run.

    python -m emca_vis.profile --models resnet50 resnet50_eca resnet50_emca_eca --batch-sizes 16

Per model it also counts the ATen operations one batch-1 forward pass dispatches (what
bounds GPU latency at batch 1: one kernel launch or more each) and how many of them the
attention adds to the plain ResNet; on CUDA it times batch 1 eagerly and replayed as a
CUDA graph, which removes the launch overhead those operations cost.

Throughput is the median over repeats after warm-up; the models are timed in turns
(round-robin), so a slow-down of the machine hits all of them alike. Each model's
throughput is also given relative to the plain ResNet of the same depth, measured in
the same run (added to the run when not asked for).

Detectors (``fasterrcnn_resnet50_emca_eca_fpn``, ...; see :mod:`emca_vis.detection`) are
measured at ``--detection-size`` (height, width; 800 x 1333 by default, their usual test
size) with 80 classes (COCO), in inference only, relative to the plain detector of their
family and depth. Their NMS and score thresholds are lifted so that an R-CNN's box head
always sees its 1,000 proposals and every image yields the maximum of 100 detections: on a
blank image with untrained weights NMS would otherwise keep a weight-dependent number of
proposals, and the mask head of an untrained Mask R-CNN would never run.

    python -m emca_vis.profile --models fasterrcnn_resnet50_fpn fasterrcnn_resnet50_emca_eca_fpn --batch-sizes 1
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from .detection.models import create_detector
from .detection.names import is_detector_name, parse_detector_name
from .errors import run_cli
from .models import create_model, parse_model_name
from .options import Parser, int_range, nonnegative_int, positive_int
from .outputs import check_out, write_json

DEFAULT_MODELS = ["resnet50", "resnet50_se", "resnet50_eca", "resnet50_emca_se", "resnet50_emca_eca"]


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_gflops(model: torch.nn.Module, image_size: int | tuple[int, int], device: str = "cpu") -> float:
    """Multiply-accumulates of one image's forward pass, in billions (a multiply-add is one
    FLOP, as in the ResNet papers; torchvision's ResNet-50 = 4.09). ``FlopCounterMode`` counts
    2 FLOPs per MAC and only convolutions and matrix products.
    ``image_size``: a side, or (height, width)."""
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    x = torch.zeros(1, 3, height, width, device=device)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / 2 / 1e9


class _OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def count_ops(model: torch.nn.Module, image_size: int, device: str = "cpu") -> int:
    """ATen operations (views included) dispatched by one no-grad forward pass at batch 1."""
    x = torch.zeros(1, 3, image_size, image_size, device=device)
    counter = _OpCounter()
    with counter, torch.no_grad():
        model(x)
    return counter.count


def time_batch_one(model: torch.nn.Module, image_size: int, device: str, repeats: int, warmup: int,
                   graph: bool) -> float:
    """Median milliseconds of one batch-1 forward pass, eager or replayed from a CUDA graph.

    The graph is captured on a side stream after warm-up passes, as CUDA graphs require;
    replaying it launches the whole forward pass at once, so what remains is the GPU's own
    work. Without CUDA, ``graph`` is refused.
    """
    if graph and not device.startswith("cuda"):
        raise ValueError("CUDA graphs need a CUDA device")
    x = torch.zeros(1, 3, image_size, image_size, device=device)
    with torch.no_grad():
        if graph:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(max(warmup, 1)):
                    model(x)
            torch.cuda.current_stream().wait_stream(stream)
            cuda_graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(cuda_graph):
                model(x)
            run = cuda_graph.replay
        else:
            def run():
                model(x)
        times = []
        for turn in range(warmup + repeats):
            _sync(device)
            start = time.perf_counter()
            run()
            _sync(device)
            if turn >= warmup:
                times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure_throughput(models: dict[str, torch.nn.Module], batch_size: int, image_size: int | tuple[int, int],
                       device: str,
                       repeats: int, warmup: int, amp: bool = False, progress: bool = True,
                       training: bool = False) -> dict[str, float]:
    """Images per second, median over ``repeats`` turns: of a no-grad forward pass, or with
    ``training`` of a full SGD step (forward, cross-entropy backward, update) in train mode."""
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    x = torch.randn(batch_size, 3, height, width, device=device)
    if device.startswith("cuda"):
        x = x.to(memory_format=torch.channels_last)
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=amp)
    step = {name: _training_step(model, x) if training else model for name, model in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    turns = [(turn, name) for turn in range(warmup + repeats) for name in models]
    with torch.set_grad_enabled(training), autocast:
        for turn, name in tqdm(turns, desc=f"batch {batch_size}", disable=not progress, leave=False):
            _sync(device)
            start = time.perf_counter()
            step[name](x)
            _sync(device)
            if turn >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: batch_size / statistics.median(t) for name, t in times.items()}


def _training_step(model: torch.nn.Module, x: torch.Tensor):
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    labels = torch.randint(0, model.fc.out_features, (x.shape[0],), device=x.device)

    def step(images: torch.Tensor) -> None:
        torch.nn.functional.cross_entropy(model(images).float(), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def plain_name(name: str) -> str:
    """The plain network a model is compared with: ResNet (or detector over a ResNet) of its depth."""
    if is_detector_name(name):
        family, backbone = parse_detector_name(name)
        return f"{family}_resnet{parse_model_name(backbone)[0]}_fpn"
    return f"resnet{parse_model_name(name)[0]}"


def build_for_profile(name: str, num_classes: int = 1000, detection_size: tuple[int, int] = (800, 1333),
                      detection_classes: int = 80) -> torch.nn.Module:
    """A model in eval mode; a detector sized for ``detection_size`` whose work does not depend on
    its weights or input: an R-CNN always sends its 1,000 proposals to the box head (as
    mmdetection's FLOP count does) and 100 detections to the mask head."""
    if not is_detector_name(name):
        return create_model(name, num_classes=num_classes).eval()
    model = create_detector(name, detection_classes, min_size=min(detection_size), max_size=max(detection_size))
    if hasattr(model, "roi_heads"):
        # No suppression (IoU never exceeds 1) and no score cut: on a blank image NMS would
        # otherwise keep a weight-dependent few hundred proposals, 14 MMACs of box head each.
        model.rpn.nms_thresh = model.roi_heads.nms_thresh = 1.0
        model.roi_heads.score_thresh = 0.0
    else:
        model.score_thresh = 0.0
    return model.eval()


def profile_models(names: list[str], image_size: int = 224, batch_sizes=(1, 32), device: str = "cpu",
                   repeats: int = 5, warmup: int = 2, amp: bool = False, num_classes: int = 1000,
                   progress: bool = True, training: bool = False,
                   detection_size: tuple[int, int] = (800, 1333)) -> dict:
    """Build each model (plus the plain network of its depth) and measure it. Returns
    ``{"settings": ..., "models": [{"model", "params_m", "gflops", "throughput":
    {batch: img/s}, "relative": {batch: ratio to plain}}]}``."""
    for name in names:
        plain_name(name)  # unknown names fail before any measuring
    detectors = [n for n in names if is_detector_name(n)]
    if detectors and training:
        raise ValueError(f"--train times classifiers only, not the detector {detectors[0]}")
    all_names = list(dict.fromkeys(names + sorted({plain_name(n) for n in names} - set(names))))
    models = {}
    for name in all_names:
        model = build_for_profile(name, num_classes, detection_size).to(device)
        if device.startswith("cuda"):
            model = model.to(memory_format=torch.channels_last)
        models[name] = model
    size = {name: tuple(detection_size) if is_detector_name(name) else image_size for name in all_names}
    rows = {name: {"model": name, "params_m": count_parameters(m) / 1e6,
                   "gflops": count_gflops(m, size[name], device),
                   # ATen ops at batch 1: what EMCA saves; detectors' counts depend on their proposals
                   "ops": None if is_detector_name(name) else count_ops(m, image_size, device),
                   "throughput": {}, "relative": {}}
            for name, m in models.items()}
    for row in rows.values():
        plain = rows.get(plain_name(row["model"]), {}).get("ops")
        row["added_ops"] = None if row["ops"] is None or plain is None else row["ops"] - plain
    if device.startswith("cuda"):
        for name, model in models.items():
            if is_detector_name(name):
                continue
            rows[name]["latency_ms"] = {"eager": time_batch_one(model, image_size, device, repeats, warmup, False),
                                        "cuda_graph": time_batch_one(model, image_size, device, repeats, warmup, True)}
    for batch_size in batch_sizes:
        speed = {}
        for shape in dict.fromkeys(size.values()):  # classifiers and detectors timed at their own sizes
            group = {name: m for name, m in models.items() if size[name] == shape}
            speed.update(measure_throughput(group, batch_size, shape, device, repeats, warmup, amp, progress,
                                            training))
        for name, row in rows.items():
            row["throughput"][str(batch_size)] = speed[name]
            row["relative"][str(batch_size)] = speed[name] / speed[plain_name(name)]
    settings = {"image_size": image_size, "batch_sizes": list(batch_sizes), "device": device, "repeats": repeats,
                "warmup": warmup, "amp": amp, "training": training, "threads": torch.get_num_threads(),
                "torch": torch.__version__}
    if detectors:
        settings["detection_size"] = list(detection_size)
    return {"settings": settings, "models": [rows[name] for name in all_names], "op_ratios": op_ratios(rows)}


def op_ratios(rows: dict[str, dict]) -> list[dict]:
    """For each EMCA model whose base is in ``rows``: the ops EMCA adds over the ops its
    base (attention in every block) adds, both relative to the plain ResNet."""
    ratios = []
    for name, row in rows.items():
        if row["added_ops"] is None:
            continue
        depth, attention, emca = parse_model_name(name)
        base = rows.get(f"resnet{depth}_{attention}")
        if emca and base and base["added_ops"] > 0:
            ratios.append({"model": name, "base": base["model"], "added_ops": row["added_ops"],
                           "base_added_ops": base["added_ops"], "ratio": row["added_ops"] / base["added_ops"]})
    return ratios


def _or_dash(value, form: str = "{}") -> str:
    return "–" if value is None else form.format(value)


def markdown_table(result: dict) -> str:
    batches = [str(b) for b in result["settings"]["batch_sizes"]]
    cuda = any("latency_ms" in row for row in result["models"])
    header = ["model", "params (M)", "GFLOPs", "ops @1", "added ops"] + [f"img/s @{b}" for b in batches]
    header += [f"vs plain @{b}" for b in batches] + (["ms @1 eager", "ms @1 CUDA graph"] if cuda else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in result["models"]:
        cells = [row["model"], f"{row['params_m']:.3f}", f"{row['gflops']:.3f}", _or_dash(row["ops"]),
                 _or_dash(row["added_ops"], "+{}")]
        cells += [f"{row['throughput'][b]:.1f}" for b in batches]
        cells += [f"{row['relative'][b]:.3f}x" for b in batches]
        if cuda:
            latency = row.get("latency_ms", {})
            cells += [_or_dash(latency.get("eager"), "{:.2f}"), _or_dash(latency.get("cuda_graph"), "{:.2f}")]
        lines.append("| " + " | ".join(cells) + " |")
    for ratio in result.get("op_ratios", []):
        lines.append(f"\n{ratio['model']} adds {ratio['added_ops']} ops, {ratio['ratio']:.2f}x the "
                     f"{ratio['base_added_ops']} of {ratio['base']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m emca_vis.profile", description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="model names (see list_models())")
    # bounded: one 2048 px batch of 32 already takes gigabytes in a ResNet-50's first stage
    parser.add_argument("--image-size", type=int_range(1, 2048), default=224)
    parser.add_argument("--detection-size", type=int_range(8, 4096), nargs=2, default=[800, 1333], metavar=("H", "W"),
                        help="input of the detectors")
    parser.add_argument("--batch-sizes", type=int_range(1, 4096), nargs="*", default=[1, 32],
                        help="timed batch sizes; none: parameters and GFLOPs only")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed turns per model and batch size")
    parser.add_argument("--warmup", type=nonnegative_int, default=2, help="untimed turns first")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument("--train", action="store_true", help="time training steps instead of inference")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.json:
        check_out(args.json, option="--json")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but no CUDA device is available")
    result = profile_models(args.models, args.image_size, args.batch_sizes, args.device, args.repeats,
                            args.warmup, args.amp, training=args.train, detection_size=tuple(args.detection_size))
    s = result["settings"]
    sizes = f"{s['image_size']} px" + (f", detectors {s['detection_size'][0]}x{s['detection_size'][1]}"
                                       if "detection_size" in s else "")
    print(f"{'training' if s['training'] else 'inference'}, {s['device']}, {sizes}, {s['threads']} threads, "
          f"median of {s['repeats']} after {s['warmup']} warm-up, torch {s['torch']}\n")
    print(markdown_table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, result, indent=2)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
