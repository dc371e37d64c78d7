"""What the training loop asks of a task: image classification here, detection in
:mod:`emca_vis.detection.task`. The loop (data order, optimiser, schedule, AMP, DDP, resume
states, metrics files, checkpoints) is shared; a task supplies

``default_data``              the dataset spec when ``--data`` is not given
``datasets(args)``            training and validation sets, checkpoint metadata, class names
``val_dataset(args)``         the validation set alone and its class names (``--eval-only``)
``build_model(args, n)``      the network (``--init`` applied)
``collate``                   how samples become a batch (``None``: PyTorch's default)
``default_lr(global_batch)``  the learning rate when ``--lr`` is not given
``step(net, batch, ...)``     a batch's loss and its counts ``[loss x images, correct, images]``
``epoch_metrics(sums)``       the training columns of an epoch's metrics row
``evaluate(net, data, ...)``  the validation columns
``best_metric``               the column that picks ``best.safetensors`` (higher is better)
``summary(row)``              the epoch's line on the console

The analysis tools (gradcam, attention, robustness, report, app) ask the same object, through
``LoadedModel.task`` (:mod:`emca_vis.inputs`), what a checkpoint of the task does:

``predict(loaded, pixels)``   predictions for images in [0, 1] (``LoadedModel.pixels``): class
                              probabilities ``[N, K]``, or one dict of boxes, labels, scores
                              (and masks) per image for a detector
``default_methods[tool]``     heatmap methods of ``gradcam`` and ``gradcam evaluate`` by default
``default_layer``             the target layer when ``--layer`` is not given
``check_method(loaded, m)``   ``m`` itself, or a one-line error if the task's heatmaps lack it
``check_layer(loaded, name)`` the target layer, or a one-line error naming the layers that work
``check_targets(loaded, a)``  a one-line error for target options (``--target``) the task lacks
``explain_image(loaded, image, methods, args)``  gradcam's figure row, JSON entry and heatmaps of
                              one image: one per method and target class, or per kept detection
``score_heatmaps(loaded, methods, args)``  gradcam evaluate's rows: localisation scores of the
                              heatmaps of the true classes, or of detections matched to objects
``attention_dataset(loaded, spec, args)``  ``(model, batches, total)`` for the attention
                              statistics: labelled batches of a dataset, by image class, or by
                              the class of each image's largest object for a detector
``attention_images(loaded, images)``  ``(model, batches, left_out)`` for single images, labelled
                              by the predicted class (a detector: its largest detection's)

and what corruption robustness (:mod:`emca_vis.robustness.evaluate`) needs:

``robustness_data(loaded, spec, split, n)``   the evaluation set in pixels [0, 1], its info (class names)
``robustness_c_data(spec, c, s, clean, names, split)``  pre-generated corrupted images of that set
``robustness_cells(models, source, batches, corruption, n, world, tracker)``  each model's cell
                              (what its scores are recomputed from), gathered over processes;
                              ``tracker``: ``--stability``'s (classifiers)
``robustness_results(models, done, args, baseline)``  the results JSON from the cells
``robustness_table(results)``, ``robustness_csv(results, path)``  the printed table, the CSV
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from ..checkpoint import read_state_dict
from ..data import build_dataset
from ..models import create_model, load_backbone
from .distributed import all_reduce_sum
from .faults import fault_point


class ClassificationTask:
    name = "classification"
    best_metric = "val_top1"
    collate = None
    default_data = "shapes"
    default_methods = {"gradcam": ("gradcam", "gradcam++", "layercam", "integrated_gradients"),
                       "evaluate": ("gradcam", "gradcam++", "layercam")}
    default_layer = "layer4"

    @staticmethod
    def datasets(args) -> tuple:
        train_set, info = build_dataset(args.data, "train", image_size=args.image_size, length=args.train_size,
                                        seed=args.data_seed)
        val_set, _ = build_dataset(args.data, "val", image_size=args.image_size, length=args.val_size,
                                   seed=args.data_seed)
        if args.train_size and len(train_set) > args.train_size:
            train_set = Subset(train_set, range(args.train_size))
        return train_set, val_set, info.metadata(), info.class_names

    @staticmethod
    def val_dataset(args) -> tuple:
        val_set, info = build_dataset(args.data, "val", image_size=args.image_size, length=args.val_size,
                                      seed=args.data_seed)
        return val_set, info.class_names

    @staticmethod
    def build_model(args, num_classes: int, input_size: int | None = None, announce: bool = True) -> nn.Module:
        # CIFAR-sized inputs need the 3x3 stem; from 64 px on the ImageNet stem keeps full-width
        # models trainable on a CPU (the 3x3 stem costs 16x the compute at 64 px).
        stem = args.stem or ("cifar" if input_size < 64 else "imagenet")
        model = create_model(args.model, num_classes, placement=args.placement, emca_stages=args.emca_stages,
                             emca_blocks=args.emca_blocks, stem=stem, width=args.width, gate=args.gate)
        if args.init and not args.resume:
            state = read_state_dict(args.init)
            new = load_backbone(model, state, skip_head=state.get("fc.weight", model.fc.weight).shape
                                != model.fc.weight.shape)
            if announce:
                print(f"initialised from {args.init}; new (not in the file): {len(new)} tensors")
        return model

    @staticmethod
    def default_lr(global_batch: int, optimizer: str) -> float:
        return 0.1 * global_batch / 256 if optimizer == "sgd" else 1e-3 * global_batch / 512

    @staticmethod
    def step(net: nn.Module, batch, device: torch.device, args, autocast) -> tuple[torch.Tensor, list]:
        images, labels = _to_device(*batch, device, args.channels_last)
        with autocast:
            logits = net(images)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=args.label_smoothing)
        return loss, [loss.item() * len(labels), (logits.argmax(1) == labels).sum().item(), len(labels)]

    @staticmethod
    def epoch_metrics(loss_sum: float, correct: float, seen: float) -> dict[str, float]:
        return {"train_loss": loss_sum / max(seen, 1), "train_top1": 100 * correct / max(seen, 1)}

    @staticmethod
    @torch.no_grad()
    def evaluate(model: nn.Module, dataset: Dataset, args, device: torch.device, rank: int, world: int,
                 autocast) -> dict[str, float]:
        """Top-1/top-5 accuracy (%) and loss over the whole dataset, sharded over processes."""
        model.eval()
        shard = Subset(dataset, range(rank, len(dataset), world))
        loader = DataLoader(shard, batch_size=args.batch_size, num_workers=args.workers,
                            pin_memory=device.type == "cuda")
        loss = top1 = top5 = 0.0
        for images, labels in tqdm(loader, desc="val", leave=False, disable=rank != 0 or None):
            images, labels = _to_device(images, labels, device, args.channels_last)
            with autocast:
                logits = model(images).float()
            loss += F.cross_entropy(logits, labels, reduction="sum").item()
            best = logits.topk(min(5, logits.shape[1]), dim=1).indices
            top1 += (best[:, 0] == labels).sum().item()
            top5 += (best == labels[:, None]).any(1).sum().item()
            fault_point("val")
        loss, top1, top5, n = all_reduce_sum([loss, top1, top5, len(shard)], device)
        return {"val_loss": loss / n, "val_top1": 100 * top1 / n, "val_top5": 100 * top5 / n}

    @staticmethod
    @torch.no_grad()
    def predict(loaded, pixels: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[N, K]`` of images ``[N, 3, S, S]`` in [0, 1]."""
        return loaded.model(loaded.normalise(pixels)).softmax(1)

    # The analysis verbs: the classifier's implementations live with the tools (emca_vis.explain,
    # emca_vis.attention), imported on use since those import this module.
    @staticmethod
    def check_method(loaded, method: str) -> str:
        from ..explain.heatmaps import check_method

        return check_method(method)

    @staticmethod
    def check_layer(loaded, name: str):
        from ..explain.heatmaps import check_layer

        return check_layer(loaded.model, name, loaded.input_size)

    @staticmethod
    def check_targets(loaded, args) -> None:
        from ..explain.heatmaps import resolve_target

        if getattr(args, "target", None) is not None:
            resolve_target(args.target, loaded.class_names)

    @staticmethod
    def explain_image(loaded, image, methods, args):
        from ..gradcam import explain_class_image

        return explain_class_image(loaded, image, methods, args)

    @staticmethod
    def score_heatmaps(loaded, methods, args) -> list[dict]:
        from ..explain.evaluate import evaluation_set, score_model

        images, masks, labels = evaluation_set(loaded, args.data, args.split, args.n, args.boxes)
        return score_model(loaded, images, masks, labels, args, methods=methods)

    @staticmethod
    def attention_dataset(loaded, spec: str, args):
        from ..checkpoint.classes import same_classes
        from ..errors import UserError

        dataset, info = build_dataset(spec, args.split, image_size=loaded.input_size, train=False)
        if not same_classes(info.class_names, loaded.class_names):
            raise UserError(f"{loaded.path}: its classes differ from those of {spec}")
        loader = DataLoader(Subset(dataset, range(min(args.n, len(dataset)))), batch_size=args.batch_size)
        return loaded.model, loader, len(loader)

    @staticmethod
    @torch.no_grad()
    def attention_images(loaded, images):
        x = torch.stack([loaded.preprocess(image) for image in images])
        return loaded.model, [(x, loaded.model(x).argmax(1))], []

    @staticmethod
    def summary(row: dict) -> str:
        return f"train loss {row['train_loss']:.4f}, val top-1 {row['val_top1']:.2f}%, top-5 {row['val_top5']:.2f}%"

    # Robustness: errors per image, CE / mCE (:mod:`emca_vis.robustness.evaluate`, imported when used).
    @staticmethod
    def robustness_data(loaded, spec: str, split: str, n: int) -> tuple:
        """Images after the checkpoint's resize and centre crop, in [0, 1]: corruptions act there."""
        from ..data import eval_pixels

        dataset, info = build_dataset(spec, split, image_size=loaded.input_size, train=False)
        dataset.transform = eval_pixels(loaded.input_size, loaded.resize)
        return dataset, info

    @staticmethod
    def robustness_c_data(spec: str, corruption: str, severity: int, clean, class_names: list[str], split: str):
        from ..robustness import cdata

        return cdata.load(spec, corruption, severity, clean.transform, class_names)

    @staticmethod
    def robustness_cells(models, source, batches, corruption, n: int, world: int, tracker=None) -> list[dict]:
        from ..robustness.evaluate import classification_cells

        return classification_cells(models, source, batches, corruption, n, world, tracker)

    @staticmethod
    def robustness_results(models, done: dict, args, baseline: str) -> dict:
        from ..robustness.evaluate import build_results

        return build_results(models, done, args, baseline)

    @staticmethod
    def robustness_table(results: dict) -> str:
        from ..robustness.evaluate import classification_table

        return classification_table(results)

    @staticmethod
    def robustness_csv(results: dict, path) -> None:
        from ..robustness.evaluate import write_csv

        write_csv(results, path)


def _to_device(images, labels, device, channels_last: bool):
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels.to(device, non_blocking=True)


def get_task(name: str):
    if name == "detection":
        from ..detection.task import DetectionTask  # torchvision's detectors and pycocotools, when needed

        return DetectionTask()
    return ClassificationTask()
