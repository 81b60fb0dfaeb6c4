"""Model registry, the Classifier interface, and weights resolution (none / imagenet / PATH / RUN_DIR)."""

from __future__ import annotations

import pytest
import torch

from dlstudy.config import ModelConfig
from dlstudy.engine.checkpoint import save_checkpoint
from dlstudy.errors import ConfigError, WeightsError
from dlstudy.models import MODELS, build_model, use_small_stem
from dlstudy.models.backbones import get_spec
from dlstudy.models.weights import _torchvision_to_classifier, imagenet_file


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_builds_and_runs_forward(name):
    # 1-channel 8 px input: the smallest case every backbone must handle (small stem, grey images)
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name, embedding_dim=16), num_classes=7, in_channels=1, image_size=8)
    with torch.no_grad():  # eval forward only: big backbones' first backward costs seconds on a busy CPU
        out = model.eval()(torch.randn(2, 1, 8, 8))
    assert out["logits"].shape == (2, 7)
    assert out["features"].shape == (2, MODELS[name].feature_dim) == (2, model.feature_dim)
    assert out["embedding"].shape == (2, 16)
    torch.testing.assert_close(out["embedding"].norm(dim=1), torch.ones(2))  # L2-normalised
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert has_bn == MODELS[name].has_batchnorm


@pytest.mark.parametrize("name", ["smallcnn", "mlp"])
def test_small_models_train_on_rgb_and_batch_one(name):
    model = build_model(ModelConfig(name=name), num_classes=3, in_channels=3, image_size=16).train()
    model(torch.randn(1, 3, 16, 16))["logits"].sum().backward()  # GroupNorm / no norm: batch size 1 works
    assert all(p.grad is not None for p in model.parameters())


def test_unknown_model_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="resnet18"):
        get_spec("resnet19")


def test_small_stem_is_automatic_for_small_images():
    assert use_small_stem(None, 32) and use_small_stem(None, 64) and not use_small_stem(None, 224)
    assert not use_small_stem(False, 32) and use_small_stem(True, 224)
    small = build_model(ModelConfig(name="resnet18"), 10, 3, 32)
    large = build_model(ModelConfig(name="resnet18"), 10, 3, 224)
    assert small.backbone.conv1.kernel_size == (3, 3) and small.backbone.conv1.stride == (1, 1)
    assert isinstance(small.backbone.maxpool, torch.nn.Identity)
    assert large.backbone.conv1.kernel_size == (7, 7)


def test_reset_classifier_replaces_only_the_head():
    model = build_model(ModelConfig(name="smallcnn"), 10, 1, 8)
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    model.reset_classifier(4)
    assert model.head.out_features == 4 and model(torch.randn(3, 1, 8, 8))["logits"].shape == (3, 4)
    for k, v in model.backbone.state_dict().items():
        torch.testing.assert_close(v, backbone_before[k])


def test_backbone_and_head_parameters_partition_the_model():
    model = build_model(ModelConfig(name="mlp", embedding_dim=8), 10, 1, 8)
    ids = [id(p) for p in model.backbone_parameters()] + [id(p) for p in model.head_parameters()]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())


# ------------------------------------------------------------------------------------------------ weights


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("DLSTUDY_OFFLINE", "1")  # never try the network in tests
    return tmp_path / "torch-home"


def test_missing_imagenet_file_names_the_file_and_the_folder(torch_home):
    _, name, folder = imagenet_file(MODELS["resnet18"])
    assert name == "resnet18-f37072fd.pth" and folder == torch_home / "hub" / "checkpoints"
    with pytest.raises(WeightsError) as info:
        build_model(ModelConfig(name="resnet18", weights="imagenet"), 10, 3, 32)
    assert name in str(info.value) and str(folder) in str(info.value)


def test_imagenet_weights_load_from_the_torchvision_cache(torch_home):
    import torchvision

    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)  # stands in for the real file (same keys and shapes)
    _, name, folder = imagenet_file(MODELS["resnet18"])
    folder.mkdir(parents=True)
    torch.save(reference.state_dict(), folder / name)
    # 1-channel input and 224 px (ImageNet stem): the RGB filters are summed into one channel
    model = build_model(ModelConfig(name="resnet18", weights="imagenet"), 10, 1, 224)
    torch.testing.assert_close(model.backbone.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    torch.testing.assert_close(model.backbone.conv1.weight, reference.conv1.weight.sum(1, keepdim=True))
    report = model.weights_report
    assert "fc.weight" not in " ".join(report.loaded) and set(report.missing) == {"head.weight", "head.bias"}
    # a grey image gives the pretrained RGB stem's response to the same grey image
    grey = torch.rand(1, 1, 32, 32)
    torch.testing.assert_close(model.backbone.conv1(grey), reference.conv1(grey.expand(1, 3, 32, 32)),
                               rtol=1e-4, atol=1e-5)


def test_small_stem_with_imagenet_weights_keeps_a_fresh_stem(torch_home):
    import torchvision

    _, name, folder = imagenet_file(MODELS["resnet18"])
    folder.mkdir(parents=True)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), folder / name)
    model = build_model(ModelConfig(name="resnet18", weights="imagenet"), 10, 3, 32)
    assert "backbone.conv1.weight" in model.weights_report.missing  # 7x7 file conv does not fit the 3x3 stem
    assert "conv1.weight" in " ".join(model.weights_report.skipped)


def test_bad_path_and_non_state_dict_files(tmp_path):
    with pytest.raises(WeightsError, match="no such file or run folder"):
        build_model(ModelConfig(name="smallcnn", weights=str(tmp_path / "nope.pt")), 10, 1, 8)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="junk.pt"):
        build_model(ModelConfig(name="smallcnn", weights=str(junk)), 10, 1, 8)
    listy = tmp_path / "list.pt"
    torch.save([1, 2, 3], listy)
    with pytest.raises(WeightsError, match="expected a state dict"):
        build_model(ModelConfig(name="smallcnn", weights=str(listy)), 10, 1, 8)
    other = tmp_path / "mlp.pt"
    torch.save(build_model(ModelConfig(name="mlp"), 10, 1, 8).state_dict(), other)
    with pytest.raises(WeightsError, match="another architecture"):
        build_model(ModelConfig(name="smallcnn", weights=str(other)), 10, 1, 8)


def test_run_dir_weights_take_the_best_checkpoint_and_a_new_head(tmp_path):
    torch.manual_seed(0)
    trained = build_model(ModelConfig(name="smallcnn"), 10, 1, 8)
    run = tmp_path / "run"
    with pytest.raises(WeightsError, match="checkpoints"):
        build_model(ModelConfig(name="smallcnn", weights=str(run.mkdir() or run)), 5, 1, 8)
    save_checkpoint(run / "checkpoints" / "best.pt", model=trained, epoch=3, config={})
    torch.manual_seed(1)
    model = build_model(ModelConfig(name="smallcnn", weights=str(run)), 5, 1, 8)  # 5 classes: head mismatch
    for k, v in trained.backbone.state_dict().items():
        torch.testing.assert_close(model.backbone.state_dict()[k], v)
    assert model.head.out_features == 5
    assert set(model.weights_report.missing) == {"head.weight", "head.bias"}
    assert set(model.weights_report.skipped) == {"head.weight", "head.bias"}
    same = build_model(ModelConfig(name="smallcnn", weights=str(run / "checkpoints" / "best.pt")), 10, 1, 8)
    torch.testing.assert_close(same.head.weight, trained.head.weight)  # same classes: the head is reused
    ddp_file = tmp_path / "ddp.pt"  # a state dict saved from a DistributedDataParallel wrapper
    torch.save({f"module.{k}": v for k, v in trained.state_dict().items()}, ddp_file)
    from_ddp = build_model(ModelConfig(name="smallcnn", weights=str(ddp_file)), 10, 1, 8)
    torch.testing.assert_close(from_ddp.head.weight, trained.head.weight)


def test_old_densenet_key_names_are_mapped():
    spec = MODELS["densenet121"]
    state = {"features.denseblock1.denselayer1.norm.1.weight": torch.ones(1), "classifier.weight": torch.ones(1)}
    assert _torchvision_to_classifier(state, spec) == {
        "backbone.features.denseblock1.denselayer1.norm1.weight": torch.ones(1)}


def _patch_rows(x: torch.Tensor) -> torch.Tensor:
    """Every 2x2 patch of (N, C, H, W) as a (C*2*2,) row in a conv filter's (C, kh, kw) order, by plain loops."""
    n, c, h, w = x.shape
    return torch.stack([x[i, :, r:r + 2, s:s + 2].reshape(-1) for i in range(n) for r in range(h - 1)
                        for s in range(w - 1)])


def test_airbench94_whitening_stem_decorrelates_the_training_patches():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="airbench94"), num_classes=10, in_channels=3, image_size=32)
    x = torch.randn(40, 3, 12, 12)
    x[:, 1] += 0.8 * x[:, 0]  # correlated channels and a per-channel scale: not white to start with
    x[:, 2] *= 3.0
    model.backbone.init_from_data(x)
    stem = model.backbone.stem[0]
    rows = _patch_rows(x).double()  # (P, 12): the oracle covariance from explicit patches
    covariance = rows.T @ rows / len(rows)
    filters = stem.weight.double().reshape(24, 12)
    whitened = filters[:12] @ covariance @ filters[:12].T  # the covariance of the first 12 output channels
    eigenvalues = torch.linalg.eigvalsh(covariance).flip(0)
    # unit variance up to the eps regulariser: lambda / (lambda + eps)
    torch.testing.assert_close(whitened, torch.diag(eigenvalues / (eigenvalues + model.backbone.WHITEN_EPS)),
                               atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(filters[12:], -filters[:12])  # the negatives: GELU keeps both signs' information
    # the filters are fixed: a buffer (saved, loaded), not a parameter an optimizer would train; the bias trains
    names = dict(model.named_parameters())
    assert "backbone.stem.0.weight" not in names and "backbone.stem.0.bias" in names
    assert "backbone.stem.0.weight" in model.state_dict()
    model.set_backbone_frozen(False)
    assert "backbone.stem.0.weight" not in dict(model.named_parameters())


def test_airbench94_convs_start_as_the_identity():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="airbench94"), num_classes=10, in_channels=3, image_size=32)
    conv = model.backbone.blocks[0][0]  # 24 -> 64 channels: the first 24 filters pass their channel through
    x = torch.randn(2, 24, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(conv(x)[:, :24], x)
    grey = build_model(ModelConfig(name="airbench94"), num_classes=10, in_channels=1, image_size=28)
    assert grey.backbone.stem[0].weight.shape == (8, 1, 2, 2)  # 2 x 1 channel x 2 x 2 whitening filters
