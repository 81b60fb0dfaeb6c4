"""The one batched forward pass (dlstudy.models.forward): the same numbers, to the bit, as calling the model batch by
batch (float32, channels_last, bf16 autocast), and the same as the engine's `predict` that evaluation uses."""

from __future__ import annotations

import pytest
import torch

from dlstudy.config import ModelConfig
from dlstudy.data import Split
from dlstudy.engine.loop import predict
from dlstudy.models import OUTPUTS, build_model, forward_batches
from dlstudy.models.forward import iter_forward

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def _model(name: str = "smallcnn", embedding_dim: int | None = 8, channels_last: bool = False):
    torch.manual_seed(0)
    # dropout 0.5: a forward pass left in train mode would change the logits
    model = build_model(ModelConfig(name=name, embedding_dim=embedding_dim, dropout=0.5), num_classes=5,
                        in_channels=3, image_size=16)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def _images(n: int = 23, channels: int = 3) -> torch.Tensor:
    return torch.randint(0, 256, (n, channels, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def _by_hand(model, images, output, batch_size, amp_dtype=None, channels_last=False) -> torch.Tensor:
    """The model called directly on each normalised batch, in eval mode: the oracle."""
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    outs = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size].float().mul_(1 / (255 * std)).sub_(mean / std)  # the eval transform
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=amp_dtype, enabled=amp_dtype is not None):
                out = model(x)
            outs.append((out[output] if out[output] is not None else out["features"]).float())
    return torch.cat(outs)


@pytest.mark.parametrize("output", OUTPUTS)
def test_forward_batches_equals_the_model_called_batch_by_batch(output):
    model, images = _model(), _images()
    got = forward_batches(model, images, output=output, mean=MEAN, std=STD, batch_size=7)
    assert got.dtype == torch.float32 and got.device.type == "cpu" and len(got) == len(images)
    assert torch.equal(got, _by_hand(model, images, output, 7))
    # batching changes nothing in float32 beyond rounding
    one_pass = forward_batches(model, images, output=output, mean=MEAN, std=STD, batch_size=len(images))
    torch.testing.assert_close(got, one_pass, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("output", OUTPUTS)
def test_forward_batches_under_bf16_autocast_and_channels_last_equals_the_model(output):
    # airbench: BatchNorm convolutions, whose CPU kernels depend on the memory format (as the CPU tier trains it)
    model, images = _model("airbench", channels_last=True), _images(11)
    got = forward_batches(model, images, output=output, mean=MEAN, std=STD, batch_size=4,
                          amp_dtype=torch.bfloat16, channels_last=True)
    assert got.dtype == torch.float32
    assert torch.equal(got, _by_hand(model, images, output, 4, torch.bfloat16, channels_last=True))


def test_embedding_is_the_features_without_an_embedding_head():
    model, images = _model(embedding_dim=None), _images(9)
    features = forward_batches(model, images, output="features", mean=MEAN, std=STD, batch_size=4)
    assert torch.equal(forward_batches(model, images, output="embedding", mean=MEAN, std=STD, batch_size=4), features)
    with torch.no_grad():
        x = torch.randn(2, 3, 16, 16)
        f = model.eval().forward_features(x)
        assert model(x)["embedding"] is None and torch.equal(model.forward_head(f, pre_logits=True), f)


def test_embedding_head_output_is_l2_normalised_and_differs_from_features():
    model, images = _model(embedding_dim=8), _images(6)
    emb = forward_batches(model, images, output="embedding", mean=MEAN, std=STD, batch_size=4)
    assert emb.shape == (6, 8)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(6))


@pytest.mark.parametrize("amp_dtype", [None, torch.bfloat16])
@pytest.mark.parametrize("output", ["logits", "embedding"])
def test_predict_gives_the_same_numbers_as_forward_batches(output, amp_dtype):
    """predict (evaluation, with its loss) and forward_batches (inference, SVM features) are one forward pass."""
    model = _model()
    split = Split(_images(13), torch.arange(13) % 5)
    scores, y_true, loss = predict(model, split, mean=MEAN, std=STD, device="cpu", batch_size=5, output=output,
                                   amp_dtype=amp_dtype, channels_last=True)
    assert torch.equal(scores, forward_batches(model, split, output=output, mean=MEAN, std=STD, batch_size=5,
                                               amp_dtype=amp_dtype, channels_last=True))
    assert torch.equal(y_true, split.labels)
    if output == "logits" and amp_dtype is None:
        expected = torch.nn.functional.cross_entropy(scores, y_true).item()
        assert loss == pytest.approx(expected, rel=1e-5)


def test_gray_images_are_replicated_to_the_models_channels():
    model, gray = _model(), _images(5, channels=1)
    got = forward_batches(model, gray, output="features", mean=(0.5,), std=(0.25,), batch_size=2, channels=3)
    rgb = gray.expand(-1, 3, -1, -1)
    assert torch.equal(got, forward_batches(model, rgb, output="features", mean=(0.5,) * 3, std=(0.25,) * 3,
                                            batch_size=2))


def test_the_model_keeps_its_mode_and_gets_no_gradients():
    model = _model().train()
    for out, labels, loss in iter_forward(model, _images(4), output="logits", mean=MEAN, std=STD, batch_size=2):
        assert not model.training and not out.requires_grad and loss is None and labels.shape == (2,)
    assert model.training
    model.eval()
    forward_batches(model, _images(4), mean=MEAN, std=STD)
    assert not model.training


def test_unknown_output_and_empty_input_are_errors():
    model = _model()
    with pytest.raises(ValueError, match="output"):
        forward_batches(model, _images(2), output="probabilities", mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="no images"):
        forward_batches(model, _images(0), mean=MEAN, std=STD)


@pytest.mark.parametrize("amp_dtype", [None, torch.bfloat16])
def test_flip_tta_is_the_mean_of_each_images_and_its_mirrors_logits(amp_dtype):
    model, images = _model("airbench"), _images(9)
    got = forward_batches(model, images, output="logits", mean=MEAN, std=STD, batch_size=4, amp_dtype=amp_dtype,
                          tta="flip")
    # the oracle: each image alone, then its mirror image alone, by hand (bf16: batch composition changes the
    # last bits, so the same batches are compared there)
    plain = _by_hand(model, images, "logits", 4, amp_dtype)
    mirrored = _by_hand(model, images.flip(3), "logits", 4, amp_dtype)
    torch.testing.assert_close(got, (plain + mirrored) / 2, rtol=0, atol=0)
    assert not torch.allclose(got, plain)  # a mirror image is another input to a random net
    # the flip is the left-right mirror (dim 3 of (N, C, H, W)), not up-down
    updown = _by_hand(model, images.flip(2), "logits", 4, amp_dtype)
    assert not torch.allclose(got, (plain + updown) / 2)


def test_flip_tta_loss_is_the_loss_of_the_averaged_logits():
    model, images = _model("airbench"), _images(10)
    labels = torch.arange(10) % 5
    split = Split(images, labels)
    logits, y, loss = predict(model, split, mean=MEAN, std=STD, device="cpu", batch_size=4, tta="flip")
    expected = (_by_hand(model, images, "logits", 4) + _by_hand(model, images.flip(3), "logits", 4)) / 2
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)
    assert loss == pytest.approx(float(torch.nn.functional.cross_entropy(expected, labels)), rel=1e-5)


@pytest.mark.parametrize("output,tta", [("features", "flip"), ("embedding", "flip"), ("logits", "crops")])
def test_tta_only_for_logits_and_known_modes(output, tta):
    with pytest.raises(ValueError, match="tta"):
        forward_batches(_model(), _images(3), output=output, mean=MEAN, std=STD, tta=tta)
