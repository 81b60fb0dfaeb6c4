"""Backbones from the model zoos (`tv:<name>`, `timm:<name>`) through the one Classifier interface: training (CE and
triplet + CE, frozen then discriminative-lr fine-tuning), the SVM on their features, weights round trips through
.safetensors, ImageNet weights from torchvision's and the Hugging Face caches (never the network), `dlstudy models`.

The matrix trains six real architectures two steps each on 32 px grey digits; the run figures are not drawn here
(matplotlib is most of a tiny run's time, and tests/test_report.py covers them).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import dlstudy
from dlstudy.config import DataConfig, ModelConfig
from dlstudy.errors import ConfigError, WeightsError
from dlstudy.models import MODELS, build_model, get_spec
from dlstudy.models.weights import find_imagenet, imagenet_file
from dlstudy.svm.features import feature_cache_key

MATRIX = ["timm:resnet18", "timm:convnext_atto", "timm:efficientnet_b0", "timm:vit_tiny_patch16_224",
          "tv:mobilenet_v3_small", "tv:regnet_y_400mf"]
SIZE = 32  # digits upsampled from 8 px: every architecture above takes it (a 16 px patch ViT gets 2 x 2 tokens)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("zoo-cache")  # decoded digits, shared by the matrix


@pytest.fixture
def no_figures(monkeypatch):
    import dlstudy.figures

    monkeypatch.setattr(dlstudy.figures, "draw_run_figures", lambda run_dir: [])


def _data(cache) -> dict:
    return {"name": "digits", "image_size": SIZE, "max_train": 64, "max_eval": 40, "cache_dir": str(cache)}


def _steps(run) -> list[float]:
    lines = (run.path / "steps.csv").read_text().splitlines()[1:]
    return [float(line.split(",")[3]) for line in lines]


@pytest.mark.parametrize("name", MATRIX)
def test_zoo_backbone_trains_fine_tunes_feeds_the_svm_and_round_trips_weights(name, tmp_path, cache, no_figures):
    import safetensors.torch

    from dlstudy.data import load_dataset

    train = {"epochs": 2, "max_steps_per_epoch": 1, "batch_size": 16, "eval_batch_size": 64, "num_threads": 1,
             "freeze_backbone_epochs": 1, "backbone_lr_mult": 0.1, "evaluate_before": False, "train_eval_subset": 32}
    base = {"device": "cpu", "data": _data(cache), "model": {"name": name}, "train": train}
    # CE arm: epoch 1 trains the head on a frozen backbone, epoch 2 the whole net with the backbone at lr x 0.1
    ce = dlstudy.train(base, out=tmp_path)
    assert len(_steps(ce)) == 2 and all(math.isfinite(v) for v in _steps(ce))
    history = (ce.path / "history.csv").read_text().splitlines()
    columns = history[0].split(",")
    epochs = [dict(zip(columns, line.split(","))) for line in history[1:]]
    assert [e["backbone_frozen"] for e in epochs] == ["1", "0"]
    assert float(epochs[1]["backbone_lr"]) == pytest.approx(0.1 * float(epochs[1]["lr"]))
    # the run folder rebuilds the network by name and scores its test images as the job did
    run = ce.load()
    test = load_dataset(DataConfig(**_data(cache))).test
    saved = np.load(ce.path / "predictions.npz")
    np.testing.assert_allclose(run.scores_uint8(test.images), saved["scores"], atol=1e-4)

    # triplet + CE arm with an embedding head
    triplet = dlstudy.train(base, out=tmp_path, overrides={
        "model.embedding_dim": 16, "loss.name": "triplet+ce", "loss.classes_per_batch": 4,
        "loss.samples_per_class": 4, "train.freeze_backbone_epochs": 0, "train.epochs": 1,
        "train.max_steps_per_epoch": 2})
    assert len(_steps(triplet)) == 2 and all(math.isfinite(v) for v in _steps(triplet))
    assert triplet.load().model.embedding.out_features == 16

    # weights round trip: the trained backbone's own state dict as .safetensors, loaded as model.weights PATH
    backbone = run.model.backbone
    path = tmp_path / "backbone.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, str(path))
    x = run.preprocess(test.images[:8])  # (8, 1, 32, 32) normalised
    with torch.no_grad():
        expected = run.model.eval().forward_features(x)
        again = build_model(ModelConfig(name=name, weights=str(path)), 10, 1, SIZE).eval()
        torch.testing.assert_close(again.forward_features(x), expected)
        # the SVM's 3-channel backbone (grey replicated): the grey stem spread over RGB gives the same features
        rgb = build_model(ModelConfig(name=name, weights=str(path)), 10, 3, SIZE).eval()
        torch.testing.assert_close(rgb.forward_features(x.expand(-1, 3, -1, -1)), expected, rtol=1e-4, atol=1e-4)
    assert not again.weights_report.missing or set(again.weights_report.missing) == {"head.weight", "head.bias"}

    # the SVM job on these features (dlstudy svm --features NAME --weights PATH)
    svm = dlstudy.fit_svm({"device": "cpu", "data": _data(cache),
                           # C = 0.01: at C = 1 the solver needs ~3,000 CG steps on 64 x 1280 features (25 s)
                           "svm": {"features": name, "weights": str(path), "C": [0.01]}}, out=tmp_path)
    assert svm.metrics["svm"]["n_features"] == run.model.feature_dim
    assert 0.0 <= svm.metrics["accuracy"] <= 1.0 and ":" not in next((cache / "features").glob("*.pt")).name


def test_zoo_names_resolve_lazily_and_unknown_names_list_close_matches():
    assert "timm:convnext_atto" in MODELS and "tv:mobilenet_v3_small" in MODELS
    assert "timm:resnet18.a1_in1k" in MODELS  # a pretrained tag
    assert "timm:convnext_atto" not in list(MODELS)  # iterating gives our own names only
    for bad in ("timm:resnet18.nope", "tv:nope", "nope:resnet18"):
        assert bad not in MODELS
    with pytest.raises(ConfigError, match=r"close matches: .*timm:convnext_atto"):
        get_spec("timm:convnext_atoo")
    with pytest.raises(ConfigError, match=r"close matches: .*tv:mobilenet_v3_small"):
        get_spec("tv:mobilenet_v3_smal")
    with pytest.raises(ConfigError, match=r"tv:resnet34.*dlstudy models"):
        get_spec("resnet34")  # a bare zoo name: its tv: / timm: spellings are suggested


def test_sizes_a_zoo_model_cannot_take_and_the_small_stem_are_clear_errors():
    with pytest.raises(ConfigError, match=r"timm:vit_tiny_patch16_224.*1-channel 8x8.*data.image_size"):
        build_model(ModelConfig(name="timm:vit_tiny_patch16_224"), 10, 1, 8)
    with pytest.raises(ConfigError, match="small_input_stem"):
        build_model(ModelConfig(name="tv:mobilenet_v3_small", small_input_stem=True), 10, 1, 32)


def test_one_channel_inputs_for_tv_and_timm_and_a_frozen_backbone_stays_fixed():
    torch.manual_seed(0)
    for name in ("tv:mobilenet_v3_small", "timm:resnet18"):
        model = build_model(ModelConfig(name=name, embedding_dim=8), 5, 1, 16)
        model.set_backbone_frozen(True)
        before = {k: v.clone() for k, v in model.backbone.state_dict().items()}  # BN running stats included
        out = model.train()(torch.randn(4, 1, 16, 16))
        (out["logits"].sum() + out["embedding"].sum()).backward()
        assert out["features"].shape == (4, model.feature_dim) and out["embedding"].shape == (4, 8)
        assert all(p.grad is None for p in model.backbone_parameters())
        assert all(p.grad is not None for p in model.head_parameters())
        for k, v in model.backbone.state_dict().items():
            torch.testing.assert_close(v, before[k])


# ------------------------------------------------------------------------------------------------ ImageNet files


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """Empty torchvision and Hugging Face caches; any network attempt is recorded and fails."""
    import socket
    import urllib.request

    import huggingface_hub
    import huggingface_hub.file_download
    import timm.models._hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("DLSTUDY_OFFLINE", "1")
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:2])
        raise AssertionError(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    for module, attr in [(huggingface_hub, "hf_hub_download"), (huggingface_hub.file_download, "hf_hub_download"),
                         (timm.models._hub, "hf_hub_download"), (timm.models._hub, "load_state_dict_from_hf")]:
        monkeypatch.setattr(module, attr, refuse, raising=False)
    return tmp_path, attempts


def test_timm_imagenet_without_a_cached_file_is_one_clear_error_without_network(offline):
    tmp_path, attempts = offline
    with pytest.raises(WeightsError) as info:
        build_model(ModelConfig(name="timm:resnet18", weights="imagenet"), 10, 1, 32)
    message = str(info.value)
    assert "timm/resnet18.a1_in1k" in message and "model.safetensors" in message
    assert str(tmp_path / "hf-cache") in message and "never downloads" in message
    assert attempts == []


def _hf_cache_file(cache, repo: str, filename: str):
    """The Hugging Face hub cache layout: refs/main names a snapshot holding the file."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    (folder / "snapshots" / ("0" * 40)).mkdir(parents=True)
    return folder / "snapshots" / ("0" * 40) / filename


def test_timm_imagenet_weights_load_from_the_hugging_face_cache(offline):
    import safetensors.torch
    import timm

    tmp_path, attempts = offline
    torch.manual_seed(3)
    reference = timm.create_model("convnext_atto", pretrained=False)  # stands in for the real file: 1000 classes
    file = _hf_cache_file(tmp_path / "hf-cache", "timm/convnext_atto.d2_in1k", "model.safetensors")
    safetensors.torch.save_file(reference.state_dict(), str(file))
    spec = get_spec("timm:convnext_atto")
    assert find_imagenet(spec)[0] == file
    model = build_model(ModelConfig(name="timm:convnext_atto", weights="imagenet"), 10, 1, 32)
    torch.testing.assert_close(model.backbone.stages[3].blocks[1].mlp.fc1.weight,
                               reference.stages[3].blocks[1].mlp.fc1.weight)
    torch.testing.assert_close(model.backbone.stem[0].weight, reference.stem[0].weight.sum(1, keepdim=True))
    report = model.weights_report
    assert report.source == str(file) and set(report.missing) == {"head.weight", "head.bias"}
    assert {"backbone.head.fc.weight", "backbone.head.fc.bias"} <= set(report.skipped)  # ImageNet's 1000-class classifier
    assert attempts == []


def test_tv_imagenet_weights_with_a_grey_stem(offline):
    import torchvision

    tmp_path, attempts = offline
    torch.manual_seed(4)
    reference = torchvision.models.mobilenet_v3_small(weights=None)
    spec = get_spec("tv:mobilenet_v3_small")
    _, name, folder = imagenet_file(spec)
    assert name == "mobilenet_v3_small-047dcff4.pth" and folder == tmp_path / "torch-home" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(reference.state_dict(), folder / name)
    model = build_model(ModelConfig(name="tv:mobilenet_v3_small", weights="imagenet"), 10, 1, 32).eval()
    stem = reference.features[0][0]
    torch.testing.assert_close(model.backbone.features[0][0].weight, stem.weight.sum(1, keepdim=True))
    grey = torch.rand(2, 1, 32, 32)
    with torch.no_grad():  # the grey model on a grey image = the RGB model on that image replicated
        torch.testing.assert_close(model.forward_features(grey), _tv_pooled(reference.eval(), grey),
                                   rtol=1e-4, atol=1e-4)
    assert {"backbone.classifier.3.weight", "backbone.classifier.3.bias"} <= set(model.weights_report.skipped)
    assert attempts == []


def _tv_pooled(reference, grey):
    """torchvision MobileNetV3's representation before its last Linear, for grey images replicated to RGB."""
    x = reference.avgpool(reference.features(grey.expand(-1, 3, -1, -1))).flatten(1)
    return reference.classifier[1](reference.classifier[0](x))  # Linear(576, 1024) + Hardswish; dropout: eval


# --------------------------------------------------------------------------------------------- dlstudy models


def test_models_command_lists_every_source_fast_and_measures_a_narrow_pattern(capsys, monkeypatch, offline):
    import dlstudy.commands.models as command
    from dlstudy.cli import main

    measured = []
    real = command.measure
    monkeypatch.setattr(command, "measure", lambda spec, size: measured.append(spec.name) or real(spec, size))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "tv:mobilenet_v3_small" in out and "timm:convnext_atto" in out and "smallcnn" in out
    assert sorted(measured) == sorted(n for n in MODELS)  # the full list builds only our own eight
    measured.clear()
    assert main(["models", "convnext_atto", "--source", "timm"]) == 0
    out = capsys.readouterr().out
    line = next(row for row in out.splitlines() if row.startswith("timm:convnext_atto "))
    assert line.split()[2:5] == ["3.37M", "320", "224"] and "missing" in line
    assert "timm:convnext_atto" in measured and offline[1] == []
    assert main(["models", "no-such-net"]) == 2
    assert "no model name matches 'no-such-net'" in capsys.readouterr().err


def test_feature_cache_key_has_no_colon_for_zoo_names():
    key = feature_cache_key({"name": "digits"}, "timm:convnext_atto", "none", 32)
    assert key.startswith("digits-timm-convnext_atto-") and ":" not in key


def test_a_damaged_safetensors_file_is_a_clear_weights_error(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    with pytest.raises(WeightsError, match=r"junk.safetensors is not a readable .safetensors file"):
        build_model(ModelConfig(name="smallcnn", weights=str(junk)), 10, 1, 8)
