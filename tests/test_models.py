import pytest
import torch

from mnistlab import MODELS, MnistlabError, build_model

SEED_PARAMS = {"mlp": 575_050, "cnn": 8_490}  # counted from the seed's layer sizes


@pytest.mark.parametrize("name", list(MODELS))
def test_output_shape_is_logits(name):
    model = build_model(name).eval()
    out = model(torch.randn(7, 1, 28, 28))
    assert out.shape == (7, 10)
    assert out.dtype == torch.float32
    assert not torch.allclose(out.sum(1), torch.ones(7))  # logits, not probabilities


@pytest.mark.parametrize("name", list(SEED_PARAMS))
def test_seed_models_have_the_seed_sizes(name):
    assert sum(p.numel() for p in build_model(name).parameters()) == SEED_PARAMS[name]


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


def test_fast_model_config_changes_its_size():
    small = build_model("fast", channels=(8, 16), hidden=32)
    big = build_model("fast")
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in big.parameters())
    assert small(torch.randn(2, 1, 28, 28)).shape == (2, 10)
