"""FcaNet, BAM, EPSANet, SANet and A2-Net: structure, parameter relations, recording, tools."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from emca_vis.models import BASELINES, UnknownModelError, create_model, list_models, record_attention
from emca_vis.models.baselines import FCA, PSA, BAM, DoubleAttention, ShuffleAttention, dct_filters
from emca_vis.profile import count_parameters

from .test_models import randomise


def params(name):
    with torch.device("meta"):
        return count_parameters(create_model(name))


def test_parameter_relations_of_the_paper_table():
    plain, se = params("resnet50"), params("resnet50_se")
    assert params("resnet50_fca") == se  # SE's FC layers, DCT filters are buffers
    assert params("resnet50_epsa") < plain
    assert params("resnet50_epsa") == 22_561_715  # EPSANet-50 (small): 22.56M in its paper
    sa_extra = params("resnet50_sa") - plain
    assert 0 < sa_extra / 16 < 300 and sa_extra == 3 * (3 * 256 + 4 * 512 + 6 * 1024 + 3 * 2048) // 64
    assert params("resnet50_a2") > se
    assert round(params("resnet50_a2") / 1e6, 1) == 32.9  # A2-Net-50: 33.0M in its paper
    assert round(params("resnet50_bam") / 1e6, 2) == 25.92  # BAM paper: 25.92M


def emca_table_units(name, bias_free_fc=False):
    """Parameters as the EMCA paper's table counts them: thop (parameters of leaf modules
    only, so SRM's channel-wise FC and SANet's gates are missed) divided by 2^20; its SE-type
    FC layers have no bias."""
    with torch.device("meta"):
        model = create_model(name)
    total = 0
    for module_name, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue
        for param_name, p in module.named_parameters(recurse=False):
            fc_bias = param_name == "bias" and isinstance(module, (torch.nn.Linear, torch.nn.Conv2d))
            if not (bias_free_fc and fc_bias and module_name != "fc"):
                total += p.numel()
    return round(total / 2**20, 3)


def test_counts_reproduce_the_emca_table_in_its_units():
    published = {"resnet50": 24.373, "resnet50_eca": 24.373, "resnet50_srm": 24.402, "resnet50_epsa": 21.517,
                 "resnet50_sa": 24.373, "resnet50_emca_eca": 24.373, "resnet50_emca_srm": 24.380}
    assert {name: emca_table_units(name) for name in published} == published
    bias_free = {"resnet50_se": 26.772, "resnet50_fca": 26.772, "resnet50_emca_se": 25.037}
    assert {name: emca_table_units(name, bias_free_fc=True) for name in bias_free} == bias_free
    # BAM's and A2-Net's rows (25.92, 33.006) are decimal millions, as in their own papers.
    assert round(params("resnet50_bam") / 1e6, 2) == 25.92 and emca_table_units("resnet50_bam") == 24.715


def test_names_are_registered_and_epsanet_refuses_basic_blocks():
    names = list_models()
    for suffix in BASELINES:
        assert f"resnet50_{suffix}" in names
    assert "resnet18_fca" in names and "resnet18_epsa" not in names
    with pytest.raises(UnknownModelError, match="EPSANet replaces the 3x3 conv of bottleneck blocks; use depth 50"):
        create_model("resnet18_epsa")
    with pytest.raises(ValueError, match="placement='all' does not apply to resnet18_bam"):
        create_model("resnet18_bam", placement="all")


def test_fca_pools_with_the_dct_basis():
    filters = dct_filters(32, 7)
    assert filters.shape == (32, 7, 7)
    flat = filters[::2].flatten(1)  # one row per frequency
    torch.testing.assert_close(flat @ flat.T, torch.eye(16), atol=1e-6, rtol=0)  # orthonormal
    torch.testing.assert_close(filters[0], torch.full((7, 7), 1 / 7))  # (0, 0): the DC term
    fca = FCA(32, dct_size=7)
    assert "dct" in dict(fca.named_buffers()) and "dct" not in dict(fca.named_parameters())
    x = torch.randn(2, 32, 7, 7)
    torch.testing.assert_close(fca.pool(x)[:, :2], x[:, :2].sum((2, 3)) / 7)
    # Larger maps: frequencies scale with the grid; other sizes are pooled to it first.
    torch.testing.assert_close(FCA(32, dct_size=14).pool(x.repeat_interleave(2, 2).repeat_interleave(2, 3))[:, :2],
                               x[:, :2].sum((2, 3)) * 4 / 14, rtol=1e-5, atol=1e-5)  # float32 sums of 196 terms
    assert FCA(8, dct_size=7).dct.shape == (8, 7, 7)  # narrow maps keep the top gcd(16, C) frequencies


def test_bam_gates_stage_outputs_with_one_plus_sigmoid():
    model = randomise(create_model("resnet18_bam", num_classes=3, width=0.25)).eval()
    placed = [name for name, m in model.named_modules() if isinstance(m, BAM)]
    assert placed == ["layer1.1.attn", "layer2.1.attn", "layer3.1.attn"]
    bam = model.layer2[1].attn
    x = torch.randn(2, bam.channels, 8, 8)
    channel = bam.channel_att.gate_c(x.mean((2, 3)))[:, :, None, None]
    expected = x * (1 + torch.sigmoid(channel * bam.spatial_att.gate_s(x)))
    with torch.no_grad():
        torch.testing.assert_close(bam(x.clone()), expected)
        block = model.layer2[1]
        y = torch.randn(2, bam.channels, 8, 8)
        plain = block.relu(block.bn2(block.conv2(block.relu(block.bn1(block.conv1(y))))) + y)
        torch.testing.assert_close(block(y), bam(plain))  # after the residual sum and ReLU
    keys = model.state_dict()
    assert "layer1.1.attn.spatial_att.gate_s.gate_s_conv_di_1.weight" in keys  # the released code's names
    assert "layer1.1.attn.channel_att.gate_c.gate_c_bn_1.running_mean" in keys


def test_psa_softmax_across_scales_and_recording():
    model = randomise(create_model("resnet50_epsa", num_classes=3, width=0.25), seed=1).eval()
    psa = model.layer2[0].conv2
    assert isinstance(psa, PSA) and psa.conv_4.stride == (2, 2) and psa.conv_4.kernel_size == (9, 9)
    assert [psa.conv_1.groups, psa.conv_2.groups, psa.conv_3.groups, psa.conv_4.groups] == [1, 4, 8, 8]
    x = torch.randn(2, 32, 8, 8)
    with torch.no_grad(), record_attention(model) as records:
        model(torch.randn(2, 3, 32, 32))
        out = psa(x)
    feats = [getattr(psa, f"conv_{i}")(x) for i in range(1, 5)]
    se = [torch.sigmoid(psa.se.fc2(F.relu(psa.se.fc1(f.mean((2, 3), keepdim=True))))) for f in feats]
    weights = torch.softmax(torch.stack(se, 1), dim=1)
    expected = torch.cat([feats[i] * weights[:, i] for i in (3, 2, 1, 0)], 1)  # released order
    torch.testing.assert_close(out, expected)
    record = records["layer2.0"]
    assert len(records) == 16 and record.kernels == (3, 5, 7, 9)
    assert record.scale_softmax.shape == (2, 8, 4) and record.scales.shape == (2, 32)
    torch.testing.assert_close(record.scale_softmax.sum(-1), torch.ones(2, 8))
    torch.testing.assert_close(record.scales[:, :8], record.scale_softmax[:, :, 3])  # 9x9 first


def official_shuffle(sa, x):
    """Shuffle attention as the released code writes it, step by step."""
    b, c, h, w = x.shape
    x = x.reshape(b * sa.groups, -1, h, w)
    x_0, x_1 = x.chunk(2, dim=1)
    xn = x_0 * torch.sigmoid(sa.cweight * x_0.mean((2, 3), keepdim=True) + sa.cbias)
    xs = x_1 * torch.sigmoid(sa.sweight * sa.gn(x_1) + sa.sbias)
    out = torch.cat([xn, xs], dim=1).reshape(b, -1, h, w)
    return out.reshape(b, 2, -1, h, w).permute(0, 2, 1, 3, 4).reshape(b, -1, h, w)


def test_shuffle_attention_matches_the_released_computation():
    sa = ShuffleAttention(256)
    assert sa.groups == 64 and ShuffleAttention(64).groups == 32
    randomise(sa)
    x = torch.randn(2, 256, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(sa(x), official_shuffle(sa, x))
    assert sum(p.numel() for p in sa.parameters()) == 3 * 256 // 64


def test_double_attention_gathers_and_distributes():
    model = create_model("resnet50_a2", num_classes=3, width=0.25)
    placed = [name for name, m in model.named_modules() if isinstance(m, DoubleAttention)]
    assert placed == ["layer2.0.attn", "layer2.2.attn", "layer3.0.attn", "layer3.2.attn", "layer3.4.attn"]
    a2 = randomise(DoubleAttention(16))
    x = torch.randn(2, 16, 4, 3)
    a = a2.convA(x).flatten(2)
    b = a2.convB(x).flatten(2).softmax(-1)
    v = a2.convV(x).flatten(2).softmax(1)
    z = torch.einsum("nmp,ndp,ndq->nmq", a, b, v).view(2, 8, 4, 3)  # sum_p a b -> descriptors; mix with v
    with torch.no_grad():
        torch.testing.assert_close(a2(x), x + a2.conv_reconstruct(z), rtol=1e-5, atol=1e-5)
    with record_attention(model) as records:
        model.eval()(torch.randn(1, 3, 32, 32))
    assert records == {}  # no channel scales to record


@pytest.mark.parametrize("name", ["resnet18_fca", "resnet18_sa"])
def test_channel_scales_are_recorded_per_block(name):
    model = randomise(create_model(name, num_classes=3, width=0.25)).eval()
    with torch.no_grad(), record_attention(model) as records:
        model(torch.randn(2, 3, 32, 32))
    assert list(records) == [f"layer{s}.{b}" for s in range(1, 5) for b in range(2)]
    scales = records["layer3.1"].scales
    assert scales.shape == (2, 64) and ((scales > 0) & (scales < 1)).all()


def test_every_new_model_runs_backward_and_under_autocast():
    for name in ["resnet18_fca", "resnet18_bam", "resnet18_sa", "resnet18_a2", "resnet50_epsa"]:
        model = create_model(name, num_classes=3, width=0.125 if "18" in name else 0.25, stem="cifar")
        loss = F.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([0, 2]))
        loss.backward()
        assert all(p.grad is not None for p in model.parameters()), name
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.isfinite(model.eval()(torch.randn(2, 3, 32, 32))).all()


@pytest.mark.parametrize("name", ["resnet18_fca", "resnet18_bam", "resnet50_epsa", "resnet18_sa", "resnet18_a2"])
def test_trains_on_shapes_and_goes_through_every_tool(name, tmp_path):
    from emca_vis.attention.__main__ import main as attention_main
    from emca_vis.data.shapes import render_sample
    from emca_vis.gradcam import main as gradcam_main
    from emca_vis.robustness.__main__ import main as robustness_main
    from emca_vis.train import build_parser, train

    width = "0.25" if name.endswith("epsa") else "0.125"
    train(build_parser().parse_args(["--model", name, "--epochs", "1", "--train-size", "32", "--val-size", "16",
                                     "--batch-size", "16", "--width", width, "--image-size", "32", "--stem", "cifar",
                                     "--workers", "0", "--out", str(tmp_path / "run")]))
    checkpoint = tmp_path / "run" / "best.safetensors"
    render_sample(0, "test", 1, 32).image.save(tmp_path / "a.png")
    assert gradcam_main(["--image", str(tmp_path / "a.png"), "--checkpoint", str(checkpoint), "--method", "gradcam",
                         "--out", str(tmp_path / "cam" / "g.png")]) == 0
    assert attention_main(["--checkpoint", str(checkpoint), "--image", str(tmp_path / "a.png"),
                           "--out", str(tmp_path / "att")]) == 0
    modules = json.loads((tmp_path / "att" / "attention.json").read_text())["models"][name]["modules"]
    assert len(modules) == {"resnet18_fca": 8, "resnet18_bam": 3, "resnet50_epsa": 16, "resnet18_sa": 8,
                            "resnet18_a2": 0}[name]
    assert robustness_main(["--checkpoint", str(checkpoint), "--num-images", "8", "--batch-size", "8",
                            "--corruptions", "brightness", "--severities", "1", "--out", str(tmp_path / "r.json")]) == 0
    scored = json.loads((tmp_path / "r.json").read_text())["models"][name]
    assert math.isfinite(scored["clean_err"]) if "clean_err" in scored else scored
