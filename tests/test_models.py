import math

import pytest
import torch
import torch.nn.functional as F
import torchvision

from emca_vis.models import (
    ATTENTIONS,
    EMCA_BASES,
    ChannelAttention,
    attention_modules,
    create_model,
    list_models,
    load_backbone,
    record_attention,
)
from emca_vis.models.attention import eca_kernel_size


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def randomise(model, seed=0):
    """Give every parameter and BN statistic a non-trivial value (zero inits hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                if name.endswith("running_var"):
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                else:
                    t.copy_(torch.randn(t.shape, generator=g) * (0.2 if t.dim() > 1 else 0.5))
    return model


def test_sixty_eight_registered_names():
    names = list_models()
    # 13 per depth (plain, 4 + 5 baselines, 3 EMCA) and the released EMCA-ECA model, but no basic-block EPSANet
    assert len(names) == 68 == len(set(names))
    assert "resnet18_epsa" not in names and "resnet50_epsa" in names and "resnet18_emca_eca_released" in names
    for depth in (18, 34, 50, 101, 152):
        assert f"resnet{depth}" in names
        for attn in ("se", "eca", "srm", "cbam", "emca_se", "emca_eca", "emca_srm", "emca_eca_released"):
            assert f"resnet{depth}_{attn}" in names


@pytest.mark.parametrize("name", list_models())
def test_every_name_builds_and_runs(name):
    with torch.device("meta"):  # full width builds (on the meta device: no memory, no init cost)
        full = create_model(name)
    assert full.fc.out_features == 1000 and n_params(full) > 11e6
    model = create_model(name, num_classes=7, width=0.125).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 7)
        small = create_model(name, num_classes=7, width=0.125, stem="cifar").eval()
        for size in (32, 64) if name.startswith(("resnet18", "resnet50")) else (32,):
            out = small(torch.randn(2, 3, size, size))
            assert out.shape == (2, 7) and torch.isfinite(out).all()


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_plain_resnet_is_torchvision(depth):
    reference = getattr(torchvision.models, f"resnet{depth}")().eval()
    model = create_model(f"resnet{depth}").eval()
    assert list(model.state_dict()) == list(reference.state_dict())
    assert [n for n, _ in model.named_modules()] == [n for n, _ in reference.named_modules()]
    model.load_state_dict(reference.state_dict(), strict=True)
    size = 224 if depth in (18, 50) else 64
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max().item() <= 1e-5


def test_attention_variants_take_torchvision_backbone():
    state = torchvision.models.resnet50().state_dict()
    assert load_backbone(create_model("resnet50"), state) == []
    model = create_model("resnet50_emca_eca")
    new = load_backbone(model, state)
    assert new == ["layer1.0.attn.scale_weights", "layer1.0.attn.conv.weight", "layer2.0.attn.scale_weights",
                   "layer2.0.attn.conv.weight", "layer3.0.attn.scale_weights", "layer3.0.attn.conv.weight",
                   "layer4.0.attn.scale_weights", "layer4.0.attn.conv.weight"]
    assert torch.equal(model.layer3[2].conv2.weight, state["layer3.2.conv2.weight"])
    head = create_model("resnet50_se", num_classes=10)
    with pytest.raises(ValueError, match="shape mismatch for fc.weight"):
        load_backbone(head, state)
    assert all(".attn." in k for k in load_backbone(head, state, skip_head=True))
    with pytest.raises(ValueError, match="shape mismatch"):
        load_backbone(create_model("resnet50_eca"), torchvision.models.resnet18().state_dict())


def test_emca_eca_parameters_are_four_kernels_plus_aggregation_weights():
    for depth, blocks in ((18, (1, 2, 2, 2)), (50, (1, 3, 4, 6))):  # sources: stem, then previous stage
        expansion = 4 if depth == 50 else 1
        kernels = sum(eca_kernel_size(c * expansion) for c in (64, 128, 256, 512))
        weights = sum(1 + r for r in blocks)
        extra = n_params(create_model(f"resnet{depth}_emca_eca")) - n_params(create_model(f"resnet{depth}"))
        assert extra == kernels + weights
    assert [eca_kernel_size(c) for c in (256, 512, 1024, 2048)] == [5, 5, 5, 7]


def test_emca_se_resnet50_parameter_identity():
    extra = n_params(create_model("resnet50_emca_se")) - n_params(create_model("resnet50"))
    se_weights = 2 * (256**2 + 512**2 + 1024**2 + 2048**2) // 16
    se_biases = sum(c // 16 + c for c in (256, 512, 1024, 2048))
    aggregation = (1 + 1) + (1 + 3) + (1 + 4) + (1 + 6)
    assert se_weights == 696_320
    assert extra == se_weights + se_biases + aggregation


def test_placement_counts_modules():
    assert len(attention_modules(create_model("resnet50_eca"))) == 16
    assert list(attention_modules(create_model("resnet50_eca", placement="first"))) == [
        "layer1.0", "layer2.0", "layer3.0", "layer4.0"]
    assert list(attention_modules(create_model("resnet50_eca", placement="last"))) == [
        "layer1.2", "layer2.3", "layer3.5", "layer4.2"]
    assert len(attention_modules(create_model("resnet50_emca_eca"))) == 4
    assert len(attention_modules(create_model("resnet50"))) == 0


@pytest.mark.parametrize("stages, blocks, expected", [
    (0, "all", {1: ["current"], 4: ["current"]}),
    (1, "all", {1: ["current", "stem"], 2: ["current", "stage 1 block 1", "stage 1 block 2"],
                4: ["current", "stage 3 block 1", "stage 3 block 2"]}),
    (1, 1, {1: ["current", "stem"], 3: ["current", "stage 2 block 2"]}),
    ("all", 1, {2: ["current", "stem", "stage 1 block 2"],
                4: ["current", "stem", "stage 1 block 2", "stage 2 block 2", "stage 3 block 2"]}),
])
def test_emca_source_ablation_knobs(stages, blocks, expected):
    model = create_model("resnet18_emca_eca", emca_stages=stages, emca_blocks=blocks)
    modules = attention_modules(model)
    for stage, labels in expected.items():
        assert modules[f"layer{stage}.0"].source_labels == labels
        has_weights = modules[f"layer{stage}.0"].scale_weights is not None
        assert has_weights == (len(labels) > 1)


@pytest.mark.parametrize("base", EMCA_BASES)
def test_emca_with_no_sources_is_the_base_attention_at_first_blocks(base):
    emca = randomise(create_model(f"resnet18_emca_{base}", num_classes=5, width=0.25, emca_stages=0)).eval()
    plain = create_model(f"resnet18_{base}", num_classes=5, width=0.25, placement="first").eval()
    plain.load_state_dict(emca.state_dict(), strict=True)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(emca(x), plain(x))


@pytest.mark.parametrize("base", EMCA_BASES)
def test_every_emca_parameter_receives_a_gradient(base):
    model = randomise(create_model(f"resnet18_emca_{base}", num_classes=4, width=0.25, stem="cifar"), seed=1)
    model.train()
    F.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    weights = [n for n, _ in model.named_parameters() if n.endswith("scale_weights")]
    assert len(weights) == 4


def test_recorded_scales_equal_hand_computation():
    torch.manual_seed(0)
    model = randomise(create_model("resnet18_emca_eca", num_classes=3, width=0.125, stem="cifar"), seed=2).eval()
    captured = {}
    model.layer2[0].bn2.register_forward_hook(lambda m, i, o: captured.__setitem__("x0", o.clone()))
    for b in range(2):
        model.layer1[b].register_forward_hook(lambda m, i, o, b=b: captured.__setitem__(b, o.clone()))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), record_attention(model) as records:
        model(x)
    rec = records["layer2.0"]
    attn = model.layer2[0].attn
    w = attn.scale_weights.detach()
    kernel = attn.conv.weight.detach().flatten()
    c0 = captured["x0"].shape[1]  # 16 channels; layer1 outputs have 8, tiled twice
    z = torch.empty(2, c0)
    for n in range(2):
        s = [captured["x0"][n].mean((1, 2))] + [captured[b][n].mean((1, 2)).repeat(2) for b in range(2)]
        agg = torch.relu(sum(w[r] * s[r] for r in range(3)))
        k = kernel.numel()
        padded = torch.cat([torch.zeros(k // 2), agg, torch.zeros(k // 2)])
        for c in range(c0):
            z[n, c] = torch.sigmoid((padded[c:c + k] * kernel).sum())
    assert rec.scales.shape == (2, c0)
    torch.testing.assert_close(rec.scales, z, rtol=1e-5, atol=1e-6)
    assert rec.sources == ["current", "stage 1 block 1", "stage 1 block 2"]
    assert (rec.stage, rec.block, rec.name) == (2, 0, "layer2.0")
    assert torch.equal(rec.scale_weights, w)
    assert rec.contributions.shape == (2, c0, 3)
    torch.testing.assert_close(rec.contributions[1, :, 0], w[0] * captured["x0"][1].mean((1, 2)))
    assert set(records) == {"layer1.0", "layer2.0", "layer3.0", "layer4.0"}


def test_recording_covers_baselines_and_stops_after_the_block():
    model = create_model("resnet18_srm", num_classes=3, width=0.125).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), record_attention(model) as records:
        model(x)
    assert len(records) == 8 and records["layer3.1"].scales.shape == (2, 32)
    assert records["layer3.1"].scale_weights is None and records["layer3.1"].sources == ["current"]
    assert all(m.recorder is None for m in attention_modules(model).values())
    emca = create_model("resnet18_emca_srm", num_classes=3, width=0.125).eval()
    with torch.no_grad(), record_attention(emca) as records:
        emca(x)
    assert records["layer2.0"].contributions.shape == (2, 16, 2, 3)  # SRM: (mean, std) per source


@pytest.mark.parametrize("attn", list(ATTENTIONS) + [f"emca_{b}" for b in EMCA_BASES])
def test_bf16_autocast_and_channels_last(attn):
    model = randomise(create_model(f"resnet18_{attn}", num_classes=5, width=0.25), seed=3).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
        last = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    assert torch.isfinite(low).all()
    assert (low.float() - reference).abs().max() < 0.1 * reference.abs().max()
    torch.testing.assert_close(last, reference, rtol=1e-4, atol=1e-4)


def test_one_plus_gate_formula():
    model = randomise(create_model("resnet18_emca_eca", num_classes=5, width=0.25, gate="one_plus")).eval()
    attn = model.layer1[0].attn
    x = torch.randn(2, attn.channels, 8, 8)
    context = [torch.randn(2, attn.channels)]
    z = attn.scales(x, context)
    torch.testing.assert_close(attn(x, context), x * (1 + z[:, :, None, None]))
    with pytest.raises(ValueError, match="aggregates 1 preceding maps but got 0"):
        attn(x)


def test_torch_compile_matches_eager():
    model = randomise(create_model("resnet18_emca_eca", num_classes=5, width=0.125, stem="cifar")).eval()
    x = torch.randn(2, 3, 32, 32)
    compiled = torch.compile(model)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)


def test_bad_names_and_options():
    with pytest.raises(ValueError, match="unknown model 'resnet51'"):
        create_model("resnet51")
    with pytest.raises(ValueError, match="unknown model 'resnet50_emca_cbam'"):
        create_model("resnet50_emca_cbam")
    with pytest.raises(ValueError, match="placement='middle' is not valid"):
        create_model("resnet18_se", placement="middle")
    with pytest.raises(ValueError, match="emca_stages=2 is not valid"):
        create_model("resnet18_emca_se", emca_stages=2)
    with pytest.raises(ValueError, match="unknown gate"):
        create_model("resnet18_se", gate="add")
    with pytest.raises(ValueError, match="do not divide"):
        create_model("resnet18_emca_eca", width=0.3)


def test_new_attention_type_is_one_small_class():
    class Max(ChannelAttention):
        @staticmethod
        def pool(x):
            return x.amax((2, 3))

        def excite(self, s):
            return s * self.scale

        def __init__(self, channels, **kwargs):
            super().__init__(channels, **kwargs)
            self.scale = torch.nn.Parameter(torch.ones(1))

    ATTENTIONS["max"] = Max
    try:
        model = create_model("resnet18_max", num_classes=2, width=0.125).eval()
        with torch.no_grad(), record_attention(model) as records:
            model(torch.randn(1, 3, 64, 64))
        assert len(records) == 8 and math.isclose(sum(p.numel() for p in model.parameters())
                                                  - n_params(create_model("resnet18", 2, width=0.125)), 8)
    finally:
        del ATTENTIONS["max"]


@pytest.mark.parametrize("attn", ["se", "cbam", "emca_eca", "emca_srm"])
def test_in_place_inference_gate_equals_autograd_forward(attn):
    model = randomise(create_model(f"resnet18_{attn}", num_classes=5, width=0.25, gate="one_plus"), seed=4).eval()
    x = torch.randn(2, 3, 64, 64)
    with_grad = model(x)  # autograd on: every gate allocates its output
    with torch.no_grad():
        in_place = model(x)
    torch.testing.assert_close(in_place, with_grad.detach(), rtol=0, atol=1e-6)
    assert with_grad.requires_grad


def test_attention_module_leaves_its_input_alone_unless_asked():
    attn = randomise(create_model("resnet18_se", num_classes=5, width=0.25)).layer1[0].attn
    x = torch.randn(2, attn.channels, 8, 8)
    original = x.clone()
    with torch.no_grad():
        gated = attn(x)
        assert torch.equal(x, original)
        in_place = attn(x, inplace=True)
    assert in_place.data_ptr() == x.data_ptr()
    torch.testing.assert_close(in_place, gated, rtol=0, atol=0)
