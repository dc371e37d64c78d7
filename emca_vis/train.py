"""Train EMCA and baseline ResNets; writes self-describing checkpoints.

    python -m emca_vis.train --model resnet50_emca_eca --data imagenet:/data/imagenet --epochs 100 \\
        --batch-size 64 --amp bf16 --channels-last --out runs/emca_eca
    torchrun --nproc_per_node 8 -m emca_vis.train ...          # many GPUs (DDP over NCCL)
    torchrun --nnodes 2 --node_rank 0 --master_addr HOST ...   # many machines

Batch size and learning rate: ``--batch-size`` is per process (per GPU). The global
batch is ``batch-size x processes x --accum-steps``, and ``--lr`` is the learning rate
of that global batch; left out, it follows the linear scaling rule (0.1 per 256 images
for SGD, 1e-3 per 512 for AdamW). The schedule runs per optimiser step.

Outputs in ``--out``: ``last.safetensors`` and ``best.safetensors`` (load with
``load_checkpoint``), ``metrics.csv`` / ``metrics.jsonl`` (TensorBoard too when it is
installed), and ``resume/step-*/`` states for ``--resume`` (the two newest are kept; a
corrupt newest one is reported and the previous one used). A run killed at any point and
resumed ends with the same files as one never stopped (see :mod:`emca_vis.training.loop`).

Determinism: every sample's augmentation is seeded by (seed, epoch, index) and the data
order by (seed, epoch), so a run resumed mid-epoch sees exactly the batches it would
have seen; with ``--deterministic`` on the CPU the result is bitwise identical.
"""

from __future__ import annotations

from .errors import run_cli
from .training.loop import train
from .training.options import build_parser

__all__ = ["build_parser", "main", "train"]


def main(argv: list[str] | None = None) -> int:
    train(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
