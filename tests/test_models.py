import pytest
import torch

from mnistlab import MODELS, MnistlabError, build_model

TUTORIAL_PARAMS = {"mlp": 575_050, "cnn": 8_490}  # counted from the tutorial's layer sizes


@pytest.mark.parametrize("name", list(MODELS))
def test_output_shape_is_logits(name):
    model = build_model(name).eval()
    out = model(torch.randn(7, 1, 28, 28))
    assert out.shape == (7, 10)
    assert out.dtype == torch.float32
    assert not torch.allclose(out.sum(1), torch.ones(7))  # logits, not probabilities


@pytest.mark.parametrize("name", list(TUTORIAL_PARAMS))
def test_tutorial_models_have_the_tutorial_sizes(name):
    assert sum(p.numel() for p in build_model(name).parameters()) == TUTORIAL_PARAMS[name]


def test_channels_last_gives_the_same_answer():
    torch.manual_seed(0)
    model = build_model("cnn").eval()
    x = torch.randn(4, 1, 28, 28)
    ref = model(x)
    cl = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(ref, cl)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(MnistlabError, match="unknown model 'resnet'"):
        build_model("resnet")


def test_bn_cnn_config_changes_its_size():
    small = build_model("bn-cnn", channels=(8, 16), hidden=32)
    big = build_model("bn-cnn")
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in big.parameters())
    assert small(torch.randn(2, 1, 28, 28)).shape == (2, 10)


# An et al. 2020's simple models: ten 3x3, five 5x5 or four 7x7 layers, ending at 8x8, 8x8 and 4x4
@pytest.mark.parametrize("kernel, layers, side", [(3, 10, 8), (5, 5, 8), (7, 4, 4)])
def test_simple_model_has_the_papers_layers(kernel, layers, side):
    model = build_model("simple", kernel=kernel)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == layers and all(c.kernel_size == (kernel, kernel) and c.padding == (0, 0) for c in convs)
    assert model.features(torch.randn(2, 1, 28, 28)).shape == (2, convs[-1].out_channels * side * side)


def test_simple_model_refuses_configs_that_do_not_fit():
    with pytest.raises(MnistlabError, match="kernels 3, 5 and 7"):
        build_model("simple", kernel=9)
    with pytest.raises(MnistlabError, match="leave nothing"):
        build_model("simple", kernel=5, channels=[8] * 7)
    assert build_model("simple", kernel=9, channels=[8, 8])(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_is_its_classifier_on_its_features(name):
    """The few-shot fine-tune trains `classifier` alone, on `features` computed once: together, they are the model."""
    model = build_model(name).eval()
    x = torch.randn(5, 1, 28, 28)
    features = model.features(x)
    assert features.ndim == 2 and features.shape[0] == 5
    assert torch.equal(model.classifier(features), model(x))
    assert set(dict(model.classifier.named_parameters())) and all(
        any(p is q for q in model.parameters()) for p in model.classifier.parameters())
