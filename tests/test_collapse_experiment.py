"""The collapse experiment's config and the fitting of another dataset's images to a model."""

from __future__ import annotations

import pytest
import torch

from pai.core.errors import PaiError
from pai.data.fitting import fit_to_input_shape
from pai.data.specs import dataset_spec
from pai.experiments.collapse import CollapseConfig


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"scorers": ()}, "no scorer given"),
        ({"seeds": 0}, "seeds must be a whole number >= 1, got 0"),
        ({"compressions": (10.0, 0.5)}, "compression 0.5 must be"),
        ({"density_at": float("inf")}, "compression inf must be"),
        ({"resolution": 0.0}, "resolution 0.0 must be a positive number"),
        ({"criterion": "paths"}, "unknown criterion 'paths'"),
        ({"search": "exact"}, "unknown search 'exact'; choose one of: bisection, scan"),
        ({"data_from": "imagenet"}, "unknown dataset 'imagenet'"),
    ],
)
def test_a_bad_config_names_the_bad_value(changes, message):
    with pytest.raises(PaiError, match=message):
        CollapseConfig("lenet300", "mnist", **changes)


def test_mnist_images_padded_with_black_and_repeated_to_three_channels():
    mnist = dataset_spec("mnist")
    x = torch.arange(8.0).reshape(2, 1, 2, 2)
    fitted, how = fit_to_input_shape(x, mnist, (3, 4, 4))
    black = -mnist.mean[0] / mnist.std[0]  # normalized value of pixel 0
    assert fitted.shape == (2, 3, 4, 4)
    assert torch.equal(fitted[:, :, 1:3, 1:3], x.expand(2, 3, 2, 2))
    border = torch.ones(4, 4, dtype=torch.bool)
    border[1:3, 1:3] = False
    assert torch.all(fitted[:, :, border] == black)
    assert how == "padded 2x2 to 4x4 with black, channel repeated 3 times"
    assert fit_to_input_shape(x, mnist, (1, 2, 2)) == (x, "")


def test_images_larger_than_the_model_input_are_refused():
    with pytest.raises(PaiError, match="cannot be fitted"):
        fit_to_input_shape(torch.zeros(1, 1, 28, 28), dataset_spec("mnist"), (3, 16, 16))
