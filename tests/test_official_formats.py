"""The official implementations' computations and key names (ECA-Net, CBAM, SRM, EMCA authors).

Their code is not a dependency: the computations are pinned by hand formulas on small
tensors, the key names by state dicts written with the official names and shapes.
"""

import pytest
import torch
import torch.nn.functional as F

from emca_vis.checkpoint import load_checkpoint, save_checkpoint
from emca_vis.checkpoint.formats import FORMATS, detect_format
from emca_vis.checkpoint.official import cbam, eca_net, emca_authors, infer_depth, srm
from emca_vis.models import create_model, is_released, record_attention
from emca_vis.models.attention import ECA, ReleasedEMCA, style_pool

from .test_models import randomise


def _random_like(state_dict, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(v.shape, generator=g) * 0.1 if v.is_floating_point() else v.clone())
            for k, v in state_dict.items()}


# --- computations -------------------------------------------------------------------------------

def test_cbam_official_spatial_branch_is_sigmoid_bn_conv_of_max_then_mean():
    model = randomise(create_model("resnet18_cbam", num_classes=3, width=0.25, cbam_spatial="official"), seed=1)
    attn = model.eval().layer1[0].attn
    x = torch.randn(2, attn.channels, 6, 6, dtype=torch.float64)
    attn.double()
    gated = x * torch.sigmoid(attn.fc2(F.relu(attn.fc1(x.mean((2, 3))))) + attn.fc2(F.relu(attn.fc1(x.amax((2, 3))))))[
        :, :, None, None]
    bn = attn.spatial_bn
    conv = F.conv2d(torch.cat([gated.amax(1, keepdim=True), gated.mean(1, keepdim=True)], 1), attn.spatial.weight,
                    padding=3)
    normed = (conv - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    with torch.no_grad():
        torch.testing.assert_close(attn(x), gated * torch.sigmoid(normed), rtol=0, atol=1e-12)
    assert bn.momentum == 0.01 and "layer1.0.attn.spatial_bn.running_var" in model.state_dict()


def test_cbam_paper_spatial_branch_is_unchanged_by_default():
    attn = randomise(create_model("resnet18_cbam", num_classes=3, width=0.25), seed=2).eval().layer1[0].attn
    assert not hasattr(attn, "spatial_bn") and attn.spatial_branch == "paper"
    x = torch.randn(2, attn.channels, 6, 6)
    gated = attn.apply_gate(x, attn.scales(x))
    expected = gated * torch.sigmoid(F.conv2d(torch.cat([gated.mean(1, keepdim=True), gated.amax(1, keepdim=True)], 1),
                                              attn.spatial.weight, padding=3))
    with torch.no_grad():
        torch.testing.assert_close(attn(x), expected)


def test_srm_std_biased_and_unbiased():
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64) * 3 + 1
    flat = x.flatten(2)
    biased, unbiased = style_pool(x, "biased"), style_pool(x, "unbiased")
    torch.testing.assert_close(biased[..., 0], flat.mean(-1), rtol=0, atol=1e-12)
    torch.testing.assert_close(unbiased[..., 0], flat.mean(-1), rtol=0, atol=1e-12)
    torch.testing.assert_close(biased[..., 1], (flat.var(-1, unbiased=False) + 1e-5).sqrt(), rtol=0, atol=1e-12)
    torch.testing.assert_close(unbiased[..., 1], (flat.var(-1, unbiased=True) + 1e-5).sqrt(), rtol=0, atol=1e-12)
    assert biased.dtype == torch.float64  # float64 moments stay float64
    one = torch.randn(2, 3, 1, 1)
    assert torch.isfinite(style_pool(one, "unbiased")).all()  # 0/0 in torch.var; the biased 0 here


def test_srm_option_reaches_modules_and_emca_sources():
    plain = create_model("resnet18_srm", num_classes=3, width=0.25, srm_std="unbiased")
    assert all(m.std == "unbiased" for m in plain.modules() if hasattr(m, "cfc"))
    emca = create_model("resnet18_emca_srm", num_classes=3, width=0.25, srm_std="unbiased")
    x = torch.randn(2, 16, 5, 5)
    torch.testing.assert_close(emca.source_pool(x), style_pool(x, "unbiased"))
    assert emca.config["srm_std"] == "unbiased"
    with pytest.raises(ValueError, match="srm_std='sample' is not valid"):
        create_model("resnet18_srm", srm_std="sample")


def test_eca_kernels_per_stage():
    model = create_model("resnet50_eca", num_classes=3, width=0.25, eca_kernels=[3, 5, 5, 7])
    kernels = [{b.attn.conv.kernel_size[0] for b in stage} for stage in model.stages]
    assert kernels == [{3}, {5}, {5}, {7}] and model.config["eca_kernels"] == [3, 5, 5, 7]
    with torch.device("meta"):
        adaptive = create_model("resnet50_eca", num_classes=3)
    assert [stage[0].attn.conv.kernel_size[0] for stage in adaptive.stages] == [5, 5, 5, 7]
    with pytest.raises(ValueError, match="four positive odd integers"):
        create_model("resnet18_eca", eca_kernels=[3, 4, 5, 7])
    with pytest.raises(ValueError, match="eca_kernels applies to ECA models, not resnet18_se"):
        create_model("resnet18_se", eca_kernels=[3, 3, 3, 3])


def test_se_divisor_rounds_hidden_width_like_timm():
    def widths(name, **options):
        with torch.device("meta"):  # full width, no memory
            return [stage[0].attn.fc1.out_features for stage in create_model(name, num_classes=3, **options).stages]

    assert widths("resnet18_se", se_divisor=8) == [8, 8, 16, 32]
    assert widths("resnet18_se") == [4, 8, 16, 32]
    assert widths("resnet50_se", se_divisor=8) == [16, 32, 64, 128]
    with pytest.raises(ValueError, match="se_divisor applies to SE models"):
        create_model("resnet18_cbam", se_divisor=8)


def test_released_emca_module_formula():
    attn = ReleasedEMCA(32, (("stem", 8), ("stage 1 block 2 residual", 16)))
    with torch.no_grad():
        for p in attn.parameters():
            p.copy_(torch.randn(p.shape))
    x, stem, prev = torch.randn(2, 32, 5, 5), torch.randn(2, 8), torch.randn(2, 16)
    s = x.mean((2, 3))
    w, (a, b) = attn.scale_weights, attn.fusion_weights
    local = torch.sigmoid(attn.conv(s[:, None]))[:, 0]
    aggregated = F.relu(w[0] * s + w[1] * stem.repeat(1, 4) + w[2] * prev.repeat(1, 2))
    wide = torch.sigmoid(attn.global_conv(aggregated[:, None]))[:, 0]
    z = torch.sigmoid(a * local + b * wide)
    with torch.no_grad():
        torch.testing.assert_close(attn(x, [stem, prev]), x * (1 + z[:, :, None, None]))
    assert attn.gate == "one_plus" and attn.global_conv.kernel_size == attn.conv.kernel_size == (3,)


def _released_reference(model, x):
    """The released code's forward written out: blocks 2..N aggregate GAP of the stem output and of
    the last residual branch of each earlier stage; every gate is 1 + z."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    earlier = [x.mean((2, 3))]
    for stage in model.stages:
        for index, block in enumerate(stage):
            shortcut = x if block.downsample is None else block.downsample(x)
            r = block.relu(block.bn1(block.conv1(x)))
            if hasattr(block, "conv3"):
                r = block.bn3(block.conv3(block.relu(block.bn2(block.conv2(r)))))
            else:
                r = block.bn2(block.conv2(r))
            s = r.mean((2, 3))
            attn = block.attn
            local = torch.sigmoid(attn.conv(s[:, None]))[:, 0]
            if index == 0:
                z = local
            else:
                stack = [s] + [e.repeat(1, s.shape[1] // e.shape[1]) for e in earlier]
                aggregated = F.relu(sum(w * t for w, t in zip(attn.scale_weights, stack)))
                wide = torch.sigmoid(attn.global_conv(aggregated[:, None]))[:, 0]
                z = torch.sigmoid(attn.fusion_weights[0] * local + attn.fusion_weights[1] * wide)
            x = F.relu(r * (1 + z[:, :, None, None]) + shortcut)
        earlier.append(s)  # the residual branch of the stage's last block
    return model.fc(x.mean((2, 3)))


@pytest.mark.parametrize("depth", [18, 50])
def test_released_emca_model_structure_and_forward(depth):
    model = randomise(create_model(f"resnet{depth}_emca_eca_released", num_classes=4, width=0.125), seed=5).eval()
    assert is_released(f"resnet{depth}_emca_eca_released") and not is_released(f"resnet{depth}_emca_eca")
    for stage in model.stages:
        assert type(stage[0].attn) is ECA and stage[0].attn.gate == "one_plus"
        assert all(type(b.attn) is ReleasedEMCA for b in stage[1:])
    assert model.config == {"name": f"resnet{depth}_emca_eca_released", "num_classes": 4, "stem": "imagenet",
                            "width": 0.125, "eca_kernels": None}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), record_attention(model) as records:
        out = model(x)
        torch.testing.assert_close(out, _released_reference(model, x), rtol=1e-5, atol=1e-5)
    last = f"layer4.{len(model.layer4) - 1}"
    assert records[last].sources == ["current", "stem", f"stage 1 block {len(model.layer1)} residual",
                                     f"stage 2 block {len(model.layer2)} residual",
                                     f"stage 3 block {len(model.layer3)} residual"]
    assert records[last].scale_weights.shape == (5,) and records[last].contributions.shape[-1] == 5
    assert records["layer1.0"].scale_weights is None and len(records) == sum(map(len, model.stages))
    assert all(m.pooled is None for m in model.modules() if hasattr(m, "pooled"))  # nothing held after forward


def test_released_emca_refuses_other_structures():
    with pytest.raises(ValueError, match="fixed structure; placement, emca_stages"):
        create_model("resnet18_emca_eca_released", placement="all")
    with pytest.raises(ValueError, match="unknown model 'resnet18_emca_se_released'"):
        create_model("resnet18_emca_se_released")
    with pytest.raises(ValueError, match="unknown model 'resnet18_eca_released'"):
        create_model("resnet18_eca_released")


def test_options_survive_a_checkpoint(tmp_path):
    for name, options in (("resnet18_eca", {"eca_kernels": [3, 5, 7, 7]}), ("resnet18_cbam", {"cbam_spatial": "official"}),
                          ("resnet18_srm", {"srm_std": "unbiased"}), ("resnet18_se", {"se_divisor": 8}),
                          ("resnet18_emca_eca_released", {})):
        model = randomise(create_model(name, num_classes=3, width=0.125, stem="cifar", **options), seed=6).eval()
        loaded, meta = load_checkpoint(save_checkpoint(tmp_path / f"{name}.safetensors", model))
        assert meta["model_kwargs"] == {k: v for k, v in model.config.items() if k not in ("name", "num_classes")}
        x = torch.randn(1, 3, 32, 32)
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))


# --- key names ------------------------------------------------------------------------------------

def _torchvision_keys(depth, width=0.25):
    """A torchvision-named ResNet state dict (emca-vis's plain ResNets use those names)."""
    return _random_like(create_model(f"resnet{depth}", num_classes=5, width=width).state_dict())


def _blocks(sd):
    return sorted({k.rsplit(".", 2)[0] for k in sd if k.startswith("layer") and ".conv1." in k},
                  key=lambda b: tuple(int(p) for p in b.replace("layer", "").split(".")))


def _channels(sd, block):
    return sd[f"{block}.bn3.weight" if f"{block}.bn3.weight" in sd else f"{block}.bn2.weight"].shape[0]


def _load(converted, width=0.25):
    model = create_model(converted.model, num_classes=5, width=width, **converted.options)
    model.load_state_dict(converted.state_dict, strict=True)
    return model


def test_eca_net_keys():
    sd = _torchvision_keys(50)
    kernels = {1: 3, 2: 5, 3: 5, 4: 7}  # eca_resnet50_k3557
    for block in _blocks(sd):
        sd[f"{block}.eca.conv.weight"] = torch.randn(1, 1, kernels[int(block[5])])
    assert detect_format(sd).name == "eca-net"
    converted = eca_net(sd)
    assert (converted.model, converted.options) == ("resnet50_eca", {"eca_kernels": [3, 5, 5, 7]})
    model = _load(converted)
    assert torch.equal(model.layer3[2].attn.conv.weight, sd["layer3.2.eca.conv.weight"])
    sd["layer2.1.eca.conv.weight"] = torch.randn(1, 1, 3)
    with pytest.raises(ValueError, match="stage 2 mixes ECA kernel sizes"):
        eca_net(sd)


def test_cbam_keys():
    sd = _torchvision_keys(18)
    for block in _blocks(sd):
        c = _channels(sd, block)
        prefix = f"{block}.cbam."
        sd |= {prefix + "ChannelGate.mlp.1.weight": torch.randn(c // 16, c), prefix + "ChannelGate.mlp.1.bias":
               torch.randn(c // 16), prefix + "ChannelGate.mlp.3.weight": torch.randn(c, c // 16),
               prefix + "ChannelGate.mlp.3.bias": torch.randn(c), prefix + "SpatialGate.spatial.conv.weight":
               torch.randn(1, 2, 7, 7), prefix + "SpatialGate.spatial.bn.weight": torch.randn(1),
               prefix + "SpatialGate.spatial.bn.bias": torch.randn(1),
               prefix + "SpatialGate.spatial.bn.running_mean": torch.randn(1),
               prefix + "SpatialGate.spatial.bn.running_var": torch.rand(1) + 0.5,
               prefix + "SpatialGate.spatial.bn.num_batches_tracked": torch.tensor(3)}
    assert detect_format(sd).name == "cbam"
    converted = cbam(sd)
    assert (converted.model, converted.options) == ("resnet18_cbam", {"cbam_spatial": "official"})
    # At width 0.25 stage 1 has 16 channels, C/16 = 1 hidden unit below emca-vis's minimum of 4:
    # key by key here, loaded at full width in the next test.
    assert converted.state_dict["layer4.1.attn.spatial_bn.running_var"] is sd[
        "layer4.1.cbam.SpatialGate.spatial.bn.running_var"]
    assert converted.state_dict["layer2.0.attn.fc2.weight"] is sd["layer2.0.cbam.ChannelGate.mlp.3.weight"]
    assert not [k for k in converted.state_dict if "cbam" in k]
    with pytest.raises(ValueError, match="BAM modules"):
        cbam({**sd, "bam1.channel_att.gate_c.gate_c_fc_0.weight": torch.zeros(1)})


def test_cbam_keys_load_at_full_width():
    with torch.device("meta"):
        own = create_model("resnet50_cbam", num_classes=5, cbam_spatial="official").state_dict()
    sd = {}
    for key, value in own.items():  # the official names, written out per module
        key = key.replace(".attn.fc1.", ".cbam.ChannelGate.mlp.1.").replace(".attn.fc2.", ".cbam.ChannelGate.mlp.3.")
        key = key.replace(".attn.spatial_bn.", ".cbam.SpatialGate.spatial.bn.")
        key = key.replace(".attn.spatial.", ".cbam.SpatialGate.spatial.conv.")
        sd[key] = value
    assert sd["layer1.0.cbam.ChannelGate.mlp.1.weight"].shape == (16, 256)
    converted = cbam(sd)
    assert converted.model == "resnet50_cbam" and sorted(converted.state_dict) == sorted(own)


def test_srm_repository_keys():
    sd = _torchvision_keys(50)
    se = dict(sd)
    for block in _blocks(sd):
        c = _channels(sd, block)
        sd |= {f"{block}.rclb.cfc": torch.randn(c, 2), f"{block}.rclb.bn.weight": torch.randn(c),
               f"{block}.rclb.bn.bias": torch.randn(c), f"{block}.rclb.bn.running_mean": torch.randn(c),
               f"{block}.rclb.bn.running_var": torch.rand(c) + 0.5,
               f"{block}.rclb.bn.num_batches_tracked": torch.tensor(0)}
        h = max(c // 16, 4)
        se |= {f"{block}.rclb.fc.0.weight": torch.randn(h, c), f"{block}.rclb.fc.0.bias": torch.randn(h),
               f"{block}.rclb.fc.2.weight": torch.randn(c, h), f"{block}.rclb.fc.2.bias": torch.randn(c)}
    assert detect_format(sd).name == detect_format(se).name == "srm"
    converted = srm(sd)
    assert (converted.model, converted.options) == ("resnet50_srm", {"srm_std": "unbiased"})
    model = _load(converted)
    assert torch.equal(model.layer4[2].attn.cfc, sd["layer4.2.rclb.cfc"]) and model.layer4[2].attn.std == "unbiased"
    converted = srm(se)
    assert (converted.model, converted.options) == ("resnet50_se", {})
    assert torch.equal(_load(converted).layer1[0].attn.fc2.bias, se["layer1.0.rclb.fc.2.bias"])
    with pytest.raises(ValueError, match="GE modules"):
        srm({**sd, "layer1.0.rclb.conv.0.weight": torch.zeros(1)})


def _emca_authors_state_dict(depth, width=0.25):
    """Key names and shapes of the EMCA authors' ECAResNet (every block owns all four attention weights)."""
    sd = _torchvision_keys(depth, width)
    bottleneck = "layer1.0.conv3.weight" in sd
    residual = ({"conv1": 0, "bn1": 1, "conv2": 3, "bn2": 4, "conv3": 6, "bn3": 7} if bottleneck
                else {"conv1": 0, "bn1": 1, "conv2": 3, "bn2": 4})
    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        if parts[0] in ("conv1", "bn1"):
            key = ".".join(["pre", "0" if parts[0] == "conv1" else "1"] + parts[1:])
        elif parts[0] == "fc":
            key = ".".join(["linear"] + parts[1:])
        elif parts[2] == "downsample":
            key = ".".join([f"stage{parts[0][5:]}", parts[1], "shortcut"] + parts[3:])
        else:
            key = ".".join([f"stage{parts[0][5:]}", parts[1], "residual", str(residual[parts[2]])] + parts[3:])
        out[key] = value
    for block in _blocks(sd):
        stage, index = int(block[5]), block.split(".")[1]
        k = 3 if stage == 1 else 5
        out |= {f"stage{stage}.{index}.ECA_excitation_local.0.weight": torch.randn(1, 1, k),
                f"stage{stage}.{index}.ECA_excitation_global_stage.0.weight": torch.randn(1, 1, k),
                f"stage{stage}.{index}.stage_in_fusion.0.weight": torch.randn(1, 1, stage + 1),
                f"stage{stage}.{index}.out_fusion.0.weight": torch.randn(1, 1, 2)}
    return out


@pytest.mark.parametrize("depth", [18, 50])
def test_emca_authors_keys(depth):
    sd = _emca_authors_state_dict(depth)
    assert detect_format(sd).name == "emca-authors"
    converted = emca_authors(sd)
    assert converted.model == f"resnet{depth}_emca_eca_released"
    assert converted.options == {"eca_kernels": [3, 5, 5, 5]}
    model = _load(converted)
    attn = model.layer3[1].attn
    fusion = sd["stage3.1.stage_in_fusion.0.weight"].flatten()  # [stem, stage 1, stage 2, current]
    assert attn.scale_weights.tolist() == [fusion[3].item(), *fusion[:3].tolist()]
    assert attn.fusion_weights.tolist() == sd["stage3.1.out_fusion.0.weight"].flatten().tolist()
    assert torch.equal(attn.global_conv.weight, sd["stage3.1.ECA_excitation_global_stage.0.weight"])
    assert torch.equal(model.layer2[0].downsample[1].running_var, sd["stage2.0.shortcut.1.running_var"])
    last = "conv3" if depth == 50 else "conv2"
    assert torch.equal(getattr(model.layer4[1], last).weight,
                       sd[f"stage4.1.residual.{6 if depth == 50 else 3}.weight"])
    assert torch.equal(model.fc.bias, sd["linear.bias"]) and torch.equal(model.conv1.weight, sd["pre.0.weight"])
    # The first blocks' global kernel and fusions are never read by the released forward: dropped.
    assert not [k for k in converted.state_dict if "stage_in_fusion" in k or k.startswith("stage")]


def test_emca_authors_other_configurations_are_refused():
    sd = _emca_authors_state_dict(18)
    with pytest.raises(ValueError, match="configuration other than the released one"):
        emca_authors({**sd, "stage1.1.block_in_fusion.0.weight": torch.zeros(1, 1, 2)})


def test_detection_is_unambiguous():
    assert detect_format(_torchvision_keys(18)).name == "torchvision"
    assert list(FORMATS) == ["epsanet", "timm", "eca-net", "cbam", "srm", "emca-authors", "fcanet", "bam", "sanet",
                             "torchvision"]
    assert infer_depth(_torchvision_keys(34)) == 34 and infer_depth({"conv1.weight": torch.zeros(1)}) is None
    assert len(_blocks(_torchvision_keys(34))) == 16


def test_report_names_the_released_model_and_leaves_it_out_of_the_ablations():
    from emca_vis.report.ablation import setting
    from emca_vis.report.models import architecture

    row = architecture({"model": "resnet50_emca_eca_released", "model_kwargs": {"stem": "imagenet", "width": 1.0}})
    assert row["kind"] == "EMCA-ECA (released code)" and row["emca"]
    assert setting(row, "sources") is None and setting(row, "placement") is None
    assert architecture({"model": "resnet50_emca_eca", "model_kwargs": {"emca_stages": 1, "emca_blocks": "all",
                                                                       "placement": "first"}})["kind"] == "EMCA-ECA"
