"""EMCA's lean aggregation: the same scales as the tile-every-source computation, far fewer ops."""

import pytest
import torch
import torch.nn.functional as F

from emca_vis.models import create_model
from emca_vis.models.attention import SRM
from emca_vis.profile import count_ops, op_ratios, time_batch_one

from .test_models import randomise


def reference_pool(module, x):
    """The descriptors as first written: SRM's (mean, std) from E[x^2] - E[x]^2."""
    if not isinstance(module, SRM):
        return x.mean((2, 3))
    mean = x.mean((2, 3))
    std = ((x * x).mean((2, 3)) - mean ** 2).clamp_min(0).add(1e-5).sqrt()
    return torch.stack([mean, std], dim=-1)


def reference_scales(module, x, maps):
    """Algorithm 1 as first implemented: tile each source's descriptor to C0, stack, weigh."""
    s = reference_pool(module, x)
    tiled = []
    for m in maps:
        d = reference_pool(module, m)
        tiled.append(d.repeat(1, module.channels // d.shape[1], *([1] * (d.dim() - 2))))
    stacked = torch.stack([s] + tiled, dim=-1)
    return torch.sigmoid(module.excite(F.relu(stacked @ module.scale_weights)))


@pytest.mark.parametrize("base", ["se", "eca", "srm"])
@pytest.mark.parametrize("stages", [1, "all"])
def test_lean_aggregation_equals_the_reference_in_float64(base, stages):
    model = randomise(create_model(f"resnet18_emca_{base}", num_classes=3, width=0.25, emca_stages=stages,
                                   emca_blocks="all"), seed=4).double().eval()
    checked = 0
    for module in [b.attn for layer in model.stages for b in layer if b.attn is not None]:
        if module.scale_weights is None:
            continue
        g = torch.Generator().manual_seed(module.stage)
        x = torch.randn(3, module.channels, 6, 6, generator=g, dtype=torch.float64).relu()
        # Sources of mixed widths when S = all (stem 16, stage 1 16, stage 2 32 ...), as the model feeds them.
        widths = [16 if label == "stem" else 16 * 2 ** (int(label.split()[1]) - 1) for label in module.source_labels[1:]]
        maps = [torch.randn(3, w, 6, 6, generator=g, dtype=torch.float64).relu() for w in widths]
        with torch.no_grad():
            module.scale_weights.copy_(torch.randn(len(widths) + 1, generator=g, dtype=torch.float64))
            lean = module.scales(x, [type(module).pool_source(m) for m in maps])
            torch.testing.assert_close(lean, reference_scales(module, x, maps), rtol=1e-12, atol=1e-12)
        checked += 1
    assert checked == 4


@pytest.mark.parametrize("base", ["se", "eca", "srm"])
def test_emca_adds_at_most_0_6x_the_ops_of_its_base_on_resnet50(base):
    with torch.device("meta"):
        models = {name: create_model(name).eval() for name in ("resnet50", f"resnet50_{base}", f"resnet50_emca_{base}")}
    ops = {name: count_ops(model, 224, "meta") for name, model in models.items()}
    assert ops["resnet50"] == 229
    # The bases' own counts, as first measured: the ratio may not come from a costlier base.
    assert ops[f"resnet50_{base}"] - 229 <= {"se": 160, "eca": 128, "srm": 288}[base]
    rows = {name: {"model": name, "ops": n, "added_ops": n - ops["resnet50"]} for name, n in ops.items()}
    (ratio,) = op_ratios(rows)
    assert ratio["model"] == f"resnet50_emca_{base}" and ratio["base"] == f"resnet50_{base}"
    assert ratio["ratio"] <= 0.6, ratio


def test_batch_one_timing_eager_on_cpu_and_cuda_graphs_only_on_cuda():
    model = create_model("resnet18_emca_eca", num_classes=3, width=0.125, stem="cifar").eval()
    assert time_batch_one(model, 32, "cpu", repeats=2, warmup=1, graph=False) > 0
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        time_batch_one(model, 32, "cpu", repeats=2, warmup=1, graph=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_replay_computes_the_eager_output():
    model = create_model("resnet18_emca_eca", num_classes=3, width=0.25).cuda().eval()
    assert time_batch_one(model, 64, "cuda", repeats=3, warmup=2, graph=True) > 0
