"""Foreign checkpoints: peer models saved the way their projects save them load with equal logits;
every container and prefix; refusals are one line; minimal metadata works in every tool."""

import inspect
import json
import pickle
import zipfile

import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file

from emca_vis.checkpoint import CheckpointError, load_checkpoint, read_metadata, save_checkpoint
from emca_vis.checkpoint.__main__ import main as checkpoint_main
from emca_vis.checkpoint.classes import imagenet_classes
from emca_vis.checkpoint.spec import CheckpointSpec, parse_spec
from emca_vis.errors import UserError, run_cli
from emca_vis.models import create_model

timm = pytest.importorskip("timm")

SHAPES = ["circle", "square", "triangle", "pentagon", "semicircle", "star", "cross", "diamond", "ring",
          "crescent", "arrow", "heart"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def randomise_batchnorm(model):
    """Non-trivial running statistics, so a mapping that dropped or swapped them would show."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    return model.eval()


def max_diff(peer, ours, size=64, dtype=torch.float32):
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    with torch.no_grad():
        return (peer.to(dtype)(x.to(dtype)) - ours.to(dtype)(x.to(dtype))).abs().max().item()


# --- parity with the peer models -------------------------------------------------------------

def test_torchvision_resnet18_saved_as_state_dict(tmp_path):
    peer = randomise_batchnorm(torchvision.models.resnet18())
    torch.save(peer.state_dict(), tmp_path / "r18.pth")
    ours, meta = load_checkpoint(f"resnet18={tmp_path / 'r18.pth'}")
    assert meta["model"] == "resnet18" and meta["source"]["format"] == "torchvision"
    assert meta["class_names"] == list(imagenet_classes()) and meta["class_names"][1] == "goldfish"
    assert (meta["input_size"], meta["resize"]) == (224, 256)
    assert max_diff(peer, ours) <= 1e-4
    assert max_diff(peer, ours, dtype=torch.float64) <= 1e-5


def test_timm_resnet18_training_checkpoint_and_safetensors(tmp_path):
    peer = randomise_batchnorm(timm.create_model("resnet18", num_classes=10))
    ema = randomise_batchnorm(timm.create_model("resnet18", num_classes=10))
    # timm's CheckpointSaver: state_dict, optimizer, arch, args, metric, state_dict_ema
    optimizer = torch.optim.SGD(peer.parameters(), lr=0.1, momentum=0.9)
    peer(torch.randn(1, 3, 32, 32)).sum().backward()
    optimizer.step()
    peer.eval()
    torch.save({"epoch": 3, "arch": "resnet18", "state_dict": peer.state_dict(), "optimizer": optimizer.state_dict(),
                "version": 2, "metric": 71.5, "state_dict_ema": ema.state_dict()}, tmp_path / "last.pth.tar")
    raw, _ = load_checkpoint(f"resnet18:timm={tmp_path / 'last.pth.tar'}")
    averaged, meta = load_checkpoint(f"resnet18:ema={tmp_path / 'last.pth.tar'}")
    assert meta["source"] == {"file": str(tmp_path / "last.pth.tar"), "format": "torchvision", "ema": True}
    assert max_diff(peer, raw, 32, torch.float64) <= 1e-5 and max_diff(ema, averaged, 32, torch.float64) <= 1e-5
    assert max_diff(peer, averaged, 32) > 1e-3  # the two weight sets really differ
    # model hubs: a plain safetensors file, no metadata; timm's model name maps
    save_file(peer.state_dict(), tmp_path / "model.safetensors")
    hub, meta = load_checkpoint(f"resnet18:timm={tmp_path / 'model.safetensors'}")
    assert meta["class_names"] == [str(i) for i in range(10)]
    assert max_diff(peer, hub, 32) <= 1e-4


def test_timm_seresnet50_maps_to_resnet50_se(tmp_path):
    peer = randomise_batchnorm(timm.create_model("seresnet50", num_classes=7))
    torch.save({"state_dict": peer.state_dict(), "epoch": 1}, tmp_path / "model_best.pth.tar")
    ours, meta = load_checkpoint(f"seresnet50={tmp_path / 'model_best.pth.tar'}")  # format detected: timm
    assert meta["model"] == "resnet50_se" and meta["source"]["format"] == "timm"
    assert load_checkpoint(tmp_path / "model_best.pth.tar")[1]["model"] == "resnet50_se"  # nothing named
    assert ours.layer1[0].attn.fc1.weight.shape == (16, 256)  # C/16: timm's rounding to 8 changes nothing here
    assert max_diff(peer, ours, size=48) <= 1e-4


def test_timm_seresnet18_se_widths(tmp_path):
    """timm rounds seresnet18's first-stage SE width 64/16 = 4 up to 8: the se_divisor model
    option reproduces it where the models have it; otherwise the file is refused saying so."""
    peer = randomise_batchnorm(timm.create_model("seresnet18", num_classes=5))
    torch.save(peer.state_dict(), tmp_path / "se18.pth")
    if "se_divisor" not in inspect.signature(create_model).parameters:
        with pytest.raises(CheckpointError, match=r"timm SE width 8 for 64 channels \(layer1.0.attn.fc1.weight\)"):
            load_checkpoint(f"seresnet18={tmp_path / 'se18.pth'}")
        return
    ours, meta = load_checkpoint(f"seresnet18={tmp_path / 'se18.pth'}")
    assert meta["model_kwargs"]["se_divisor"] == 8 and ours.layer1[0].attn.fc1.weight.shape == (8, 64)
    assert max_diff(peer, ours, 32) <= 1e-4 and max_diff(peer, ours, 32, torch.float64) <= 1e-5


# --- containers and prefixes -----------------------------------------------------------------

def small_pair():
    """Two emca-vis-layout state dicts (raw and EMA) of a narrow ResNet-18 with 4 classes."""
    raw = create_model("resnet18", num_classes=4, width=0.125).state_dict()
    ema = create_model("resnet18", num_classes=4, width=0.125).state_dict()
    return raw, ema


CONTAINERS = {
    "bare": (lambda raw, ema: raw, False),
    "state_dict": (lambda raw, ema: {"state_dict": raw, "optimizer": {"state": {}}, "epoch": 9}, False),
    "model": (lambda raw, ema: {"model": raw, "model_ema": ema, "args": {"lr": 0.1}}, False),
    "model_ema": (lambda raw, ema: {"model": raw, "model_ema": ema}, True),
    "state_dict_ema": (lambda raw, ema: {"state_dict": raw, "state_dict_ema": ema}, True),
    "ddp": (lambda raw, ema: {"state_dict": {f"module.{k}": v for k, v in raw.items()}}, False),
    "compile": (lambda raw, ema: {f"_orig_mod.{k}": v for k, v in raw.items()}, False),
    "ddp+compile ema": (lambda raw, ema: {"model": raw, "model_ema": {f"module._orig_mod.{k}": v
                                                                      for k, v in ema.items()}}, True),
}


@pytest.mark.parametrize("name", CONTAINERS)
def test_every_container_and_prefix(tmp_path, name):
    raw, ema = small_pair()
    build, use_ema = CONTAINERS[name]
    torch.save(build(raw, ema), tmp_path / "ckpt.pt")
    spec = f"resnet18{':ema' if use_ema else ''}={tmp_path / 'ckpt.pt'}"
    model, meta = load_checkpoint(spec, width=0.125)
    expected = ema if use_ema else raw
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    assert meta["num_classes"] == 4 and meta["source"]["ema"] is use_ema


def test_plain_safetensors_and_python_keywords(tmp_path):
    raw, _ = small_pair()
    save_file(raw, tmp_path / "hub.safetensors")
    model, meta = load_checkpoint(tmp_path / "hub.safetensors", model="resnet18", width=0.125)
    assert torch.equal(model.fc.weight, raw["fc.weight"]) and meta["source"]["format"] == "torchvision"


def test_spec_syntax():
    assert parse_spec("runs/a.safetensors") == CheckpointSpec(parse_spec("runs/a.safetensors").path)
    spec = parse_spec("seresnet50:ema:timm=dir/x=y.pth.tar")
    assert (str(spec.path), spec.model, spec.ema, spec.format) == ("dir/x=y.pth.tar", "seresnet50", True, "timm")
    assert str(spec) == "seresnet50:ema:timm=dir/x=y.pth.tar" and parse_spec(str(spec)) == spec
    assert parse_spec("runs/a=b.pth").model is None  # a head with '/' is part of the path
    assert parse_spec(":ema=x.pth") == CheckpointSpec(parse_spec("x.pth").path, None, True)
    assert parse_spec("=x.pth").path.name == "=x.pth"
    with pytest.raises(UserError, match=r"unknown or repeated tag 'tf'; .*one format of auto, epsanet, timm, eca-net, "
                                         r"cbam, srm, emca-authors, fcanet, bam, sanet, torchvision$"):
        parse_spec("resnet50:tf=x.pth")
    with pytest.raises(UserError, match="no file after '='"):
        parse_spec("resnet50=")


# --- refusals: one line each -----------------------------------------------------------------

def one_line(error) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


def test_wrong_architecture_names_the_first_mismatched_tensors(tmp_path):
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(f"resnet34={tmp_path / 'r18.pth'}")
    assert one_line(error).endswith("weights do not match the metadata's architecture: "
                                    "96 missing tensors (e.g. layer1.2.bn1.bias)")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(f"resnet50={tmp_path / 'r18.pth'}")
    assert "missing tensors (e.g. layer1.0.bn3.bias); 24 shape mismatches (e.g. layer1.0.conv1.weight: " \
        "file (64, 64, 3, 3), model (64, 64, 1, 1))" in one_line(error)
    torch.save(torchvision.models.resnet34(num_classes=3).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(CheckpointError, match=r"architecture: 96 unexpected tensors \(e.g. layer1.2.bn1.bias\)$"):
        load_checkpoint(f"resnet18={tmp_path / 'r34.pth'}")
    with pytest.raises(CheckpointError, match="missing tensors \\(e.g. layer1.0.attn.conv.weight\\)"):
        load_checkpoint(f"resnet18_eca={tmp_path / 'r18.pth'}")


def test_truncated_unknown_and_unnamed_files(tmp_path):
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), tmp_path / "r18.pth")
    data = (tmp_path / "r18.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pth: unreadable as a weights-only file") as error:
        load_checkpoint(f"resnet18={tmp_path / 'cut.pth'}")
    one_line(error)
    (tmp_path / "notes.pth").write_text("not weights")
    with pytest.raises(CheckpointError, match="notes.pth: neither a safetensors file nor one written by torch.save"):
        load_checkpoint(f"resnet18={tmp_path / 'notes.pth'}")
    save_file({"conv1.weight": torch.zeros(2, 2)}, tmp_path / "cut.safetensors")
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "cut.safetensors").read_bytes()[:-5])
    with pytest.raises(CheckpointError, match="cut.safetensors: (truncated|not a readable safetensors file)"):
        load_checkpoint(f"resnet18={tmp_path / 'cut.safetensors'}")
    assert load_checkpoint(tmp_path / "r18.pth")[1]["model"] == "resnet18"  # the key names say it
    torch.save(create_model("resnet18_eca", num_classes=3).state_dict(), tmp_path / "eca.pth")
    with pytest.raises(CheckpointError, match="its key names do not say the architecture; name it as MODEL=PATH"):
        load_checkpoint(tmp_path / "eca.pth")
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"key names of no known format \(first: encoder.weight\)"):
        load_checkpoint(f"resnet18={tmp_path / 'other.pth'}")
    with pytest.raises(CheckpointError, match="unknown format 'keras'; choose auto or one of"):
        load_checkpoint(tmp_path / "r18.pth", model="resnet18", format="keras")
    with pytest.raises(CheckpointError, match=r"no EMA weights under 'model_ema' or 'state_dict_ema'"):
        load_checkpoint(f"resnet18:ema={tmp_path / 'r18.pth'}")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="holds a list, not a state dict of tensors"):
        load_checkpoint(f"resnet18={tmp_path / 'list.pth'}")


class CreatesFile:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_payload_never_runs(tmp_path):
    marker = tmp_path / "marker"
    payload = {"state_dict": torchvision.models.resnet18().state_dict(), "hook": CreatesFile(marker)}
    torch.save(payload, tmp_path / "evil.pth")
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="evil.pth: refused: it pickles objects other than tensors") as error:
        load_checkpoint(f"resnet18={tmp_path / 'evil.pth'}")
    one_line(error)
    # a bare pickle (no zip container) is refused the same way
    (tmp_path / "evil.bin").write_bytes(pickle.dumps(CreatesFile(marker)))
    with pytest.raises(CheckpointError, match="evil.bin: (refused|unreadable)"):
        load_checkpoint(f"resnet18={tmp_path / 'evil.bin'}")
    assert not marker.exists()
    assert zipfile.is_zipfile(tmp_path / "evil.pth")  # the payload really was in the file torch reads


def test_timm_variants_refused_with_the_reason(tmp_path):
    torch.save(timm.create_model("resnet18d", num_classes=3).state_dict(), tmp_path / "r18d.pth")
    with pytest.raises(CheckpointError, match=r"timm weights with a deep stem \(conv1.0/.3/.6") as error:
        load_checkpoint(f"resnet18={tmp_path / 'r18d.pth'}")  # auto-detected as timm by its stem
    assert "torchvision's single 7x7 stem conv" in one_line(error)
    with pytest.raises(CheckpointError, match="timm's resnet50t has a tiered deep stem"):
        load_checkpoint(f"resnet50t:timm={tmp_path / 'r18d.pth'}")
    with pytest.raises(CheckpointError, match="timm's resnet26: emca-vis builds ResNet depths 18, 34, 50, 101, 152"):
        load_checkpoint(f"resnet26:timm={tmp_path / 'r18d.pth'}")


def test_wrong_class_count(tmp_path):
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(CheckpointError, match="has 10 classes, expected 12"):
        load_checkpoint(f"resnet18={tmp_path / 'r18.pth'}", num_classes=12)
    out = tmp_path / "r18.safetensors"
    assert run_cli(checkpoint_main, ["import", str(tmp_path / "r18.pth"), "--model", "resnet18", "--classes",
                                     "imagenet", "--out", str(out)]) == 2
    assert not out.exists()
    names = tmp_path / "names.txt"
    names.write_text("a\nb\n")
    with pytest.raises(UserError, match="names.txt: 2 class names, but the checkpoint has 10 classes"):
        checkpoint_main(["import", str(tmp_path / "r18.pth"), "--model", "resnet18", "--classes", str(names),
                         "--out", str(out)])
    assert not out.exists()


# --- the import command ----------------------------------------------------------------------

def test_import_writes_a_self_describing_checkpoint(tmp_path, capsys):
    peer = randomise_batchnorm(timm.create_model("resnet18", num_classes=1000))
    torch.save({"model": peer.state_dict(), "model_ema": peer.state_dict(), "epoch": 90}, tmp_path / "ckpt.pth")
    out = tmp_path / "r18.safetensors"
    assert checkpoint_main(["import", str(tmp_path / "ckpt.pth"), "--model", "resnet18", "--format", "timm", "--ema",
                            "--input-size", "64", "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out}: resnet18")
    meta = read_metadata(out)
    assert meta["class_names"][:2] == ["tench", "goldfish"] and meta["source"]["format"] == "timm"
    assert (meta["input_size"], meta["resize"], meta["mean"]) == (64, 73, [0.485, 0.456, 0.406])
    model, _ = load_checkpoint(out)
    assert max_diff(peer, model, size=48) <= 1e-4


def test_import_with_class_file_and_preprocessing(tmp_path):
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), tmp_path / "r18.pth")
    (tmp_path / "names.json").write_text(json.dumps(["cat", "dog", "fox"]))
    out = tmp_path / "r18.safetensors"
    checkpoint_main(["import", f"resnet18={tmp_path / 'r18.pth'}", "--classes", str(tmp_path / "names.json"),
                     "--input-size", "96", "--resize", "110", "--mean", "0.5", "0.5", "0.5", "--std", "0.25", "0.25",
                     "0.25", "--dataset", "pets", "--out", str(out)])
    meta = read_metadata(out)
    assert meta["class_names"] == ["cat", "dog", "fox"] and meta["dataset"] == "pets"
    assert (meta["input_size"], meta["resize"], meta["mean"], meta["std"]) == (96, 110, [0.5] * 3, [0.25] * 3)


def test_import_refuses_non_finite_logits_and_writes_nothing(tmp_path):
    state = torchvision.models.resnet18(num_classes=3).state_dict()
    state["fc.weight"].fill_(3e38)  # finite weights whose logits overflow
    torch.save(state, tmp_path / "big.pth")
    out = tmp_path / "big.safetensors"
    with pytest.raises(CheckpointError, match="a forward pass at 224 px gives NaN or infinite logits"):
        checkpoint_main(["import", str(tmp_path / "big.pth"), "--model", "resnet18", "--out", str(out)])
    assert not out.exists() and not list(tmp_path.glob(".big*"))


# --- every tool: minimal metadata and foreign specs ------------------------------------------

@pytest.fixture(scope="module")
def minimal(tmp_path_factory):
    """The README's example: save_checkpoint(path, model, class_names=names, input_size=...) and nothing else."""
    folder = tmp_path_factory.mktemp("minimal")
    model = create_model("resnet18_eca", num_classes=len(SHAPES), stem="cifar", width=0.125)
    path = save_checkpoint(folder / "minimal.safetensors", model, class_names=SHAPES, input_size=64)
    Image.new("RGB", (80, 70), (200, 40, 40)).save(folder / "photo.png")
    return folder, path


def test_minimal_metadata_through_gradcam(minimal):
    from emca_vis.gradcam import main

    folder, path = minimal
    torch.save(torchvision.models.resnet18(num_classes=4).state_dict(), folder / "tv.pth")
    out = folder / "cam.png"
    assert run_cli(main, ["--image", str(folder / "photo.png"), "--checkpoint", str(path),
                          f"resnet18={folder / 'tv.pth'}", "--method", "gradcam", "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert [m["checkpoint"] for m in report["models"]] == [str(path), f"resnet18={folder / 'tv.pth'}"]


def test_minimal_metadata_through_attention(minimal, tmp_path):
    from emca_vis.attention.__main__ import main

    folder, path = minimal
    assert run_cli(main, ["--checkpoint", str(path), "--image", str(folder / "photo.png"),
                          "--out", str(tmp_path)]) == 0
    assert (tmp_path / "attention.json").exists()


def test_minimal_metadata_and_foreign_spec_through_robustness(minimal, tmp_path):
    from emca_vis.robustness.evaluate import main

    _, path = minimal
    out = tmp_path / "r.json"
    assert run_cli(main, ["--checkpoint", str(path), "--n", "8", "--batch-size", "8", "--corruptions",
                          "brightness", "--severities", "1", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["models"]["resnet18_eca"]["n"] == 8
    # a foreign file: an ImageNet-layout folder whose class names are the file's defaults
    data = tmp_path / "data" / "val"
    for i in range(3):
        (data / str(i)).mkdir(parents=True)
        Image.new("RGB", (40, 40), (60 * i, 90, 30)).save(data / str(i) / "a.png")
    torch.save({"module." + k: v for k, v in torchvision.models.resnet18(num_classes=3).state_dict().items()},
               tmp_path / "ddp.pth")
    spec = f"resnet18={tmp_path / 'ddp.pth'}"
    assert run_cli(main, ["--checkpoint", spec, "--data", f"folder:{tmp_path / 'data'}", "--split", "val",
                          "--n", "3", "--batch-size", "3", "--corruptions", "contrast", "--severities", "1",
                          "--out", str(tmp_path / "foreign.json")]) == 0
    assert json.loads((tmp_path / "foreign.json").read_text())["models"]["resnet18"]["checkpoint"] == spec


def test_imagenet_synset_folders_are_imagenet_names(tmp_path):
    from emca_vis.checkpoint.classes import same_classes
    from emca_vis.robustness.evaluate import main

    synsets = [f"n{i:08d}" for i in range(1000)]
    names = list(imagenet_classes())
    assert same_classes(synsets, names) and same_classes(["a", "b"], ["a", "b"])
    assert not same_classes(synsets[::-1], names) and not same_classes(synsets, [str(i) for i in range(1000)])
    val = tmp_path / "imagenet" / "val"
    for i, synset in enumerate(synsets):
        (val / synset).mkdir(parents=True)
        Image.new("RGB", (8, 8), (i % 256, 0, 0)).save(val / synset / "x.png")
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    out = tmp_path / "r.json"
    assert run_cli(main, ["--checkpoint", str(tmp_path / "r18.pth"), "--data", f"imagenet:{tmp_path / 'imagenet'}",
                          "--split", "val", "--n", "2", "--batch-size", "2", "--corruptions", "contrast",
                          "--severities", "1", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["models"]["resnet18"]["n"] == 2


def test_app_lists_and_loads_foreign_files(tmp_path):
    from emca_vis import interactive as iv

    torch.save({"model": torchvision.models.resnet18().state_dict(), "epoch": 1}, tmp_path / "tv18.pth")
    save_file(torchvision.models.resnet18(num_classes=3).state_dict(), tmp_path / "hub.safetensors")
    assert list(iv.checkpoint_options(tmp_path)) == ["hub", "tv18"]
    loaded = iv.load_model(tmp_path / "tv18.pth")
    assert loaded.label == "resnet18" and loaded.class_names[:2] == ["tench", "goldfish"]
    assert iv.load_model(tmp_path / "hub.safetensors").class_names == ["0", "1", "2"]
