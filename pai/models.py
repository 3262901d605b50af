"""The model zoo: the networks the pruning-at-initialization papers report on.

Every zoo model is a `ZooModel`: `features` (everything up to the flattened representation)
followed by the output layer `fc`, so the classifier has the same name in every network. It
records `input_shape` (C, H, W of one example) and `num_classes` of the dataset it was built
for. Nothing else in pai requires these attributes: functions that need an input shape take
`input_shape=` and read it with `model_input_shape`, so any user `nn.Module` works too.

Initialization is that of the SynFlow code (Tanaka et al. 2020): Conv and Linear weights
Kaiming-normal with fan_in and ReLU gain (std sqrt(2 / fan_in), which is also
`nn.init.kaiming_normal_`'s default), biases zero, BatchNorm weight 1 and bias 0. All draws come
from a `torch.Generator` seeded with `seed`; the model is constructed on the meta device, so
building never touches the global RNG.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from pai.core.errors import PaiError, unknown_name
from pai.data.specs import DatasetSpec, dataset_spec

InputShape = tuple[int, int, int]


class ZooModel(nn.Module):
    """`fc(features(x))`, recording the input shape and class count it was built for."""

    def __init__(
        self, features: nn.Sequential, fc: nn.Linear, input_shape: InputShape, num_classes: int
    ):
        super().__init__()
        self.features = features
        self.fc = fc
        self.input_shape = input_shape
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))


class BasicBlock(nn.Module):
    """The ResNet basic block (He et al. 2016): relu(bn(conv(relu(bn(conv(x))))) + shortcut(x)).

    The shortcut is the identity, or a 1x1 conv + BatchNorm projection where the block changes
    the stride or the width (option B of He et al.; open_lth and the SynFlow code do the same).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def _flat_size(features: nn.Sequential, input_shape: InputShape) -> int:
    """The width of `features`' output for one example, found by a forward pass on meta."""
    with torch.no_grad():
        return features(torch.empty(2, *input_shape, device="meta")).shape[1]


def _fully_connected_head(features: nn.Sequential, in_width: int, widths: Sequence[int]) -> None:
    """Append Linear + ReLU layers of the given widths to `features`."""
    for width in widths:
        features.append(nn.Linear(in_width, width))
        features.append(nn.ReLU())
        in_width = width


def _lenet300(input_shape: InputShape, num_classes: int) -> ZooModel:
    features = nn.Sequential(nn.Flatten())
    _fully_connected_head(features, _flat_size(features, input_shape), (300, 100))
    return ZooModel(features, nn.Linear(100, num_classes), input_shape, num_classes)


def _lenet5(input_shape: InputShape, num_classes: int) -> ZooModel:
    """LeNet-5 (LeCun et al. 1998) with ReLU and max-pooling.

    Inputs smaller than 32x32 get 2 pixels of zero padding on the first conv, as LeCun et al.
    padded the 28x28 MNIST digits to 32x32, so both sizes reach 16 maps of 5x5.
    """
    channels, height, width = input_shape
    padding = 2 if min(height, width) < 32 else 0
    features = nn.Sequential(
        nn.Conv2d(channels, 6, 5, padding=padding),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )
    _fully_connected_head(features, _flat_size(features, input_shape), (120, 84))
    return ZooModel(features, nn.Linear(84, num_classes), input_shape, num_classes)


def _conv_net(pairs: int, input_shape: InputShape, num_classes: int) -> ZooModel:
    """Conv-2/4/6 of Frankle & Carbin (2019): pairs of 3x3 convs (64, 128, 256 filters) with
    ReLU and a max-pool after each pair, then fully connected 256-256 and the output layer."""
    features = nn.Sequential()
    in_channels = input_shape[0]
    for pair in range(pairs):
        out_channels = 64 * 2**pair
        for _ in range(2):
            features.append(nn.Conv2d(in_channels, out_channels, 3, padding=1))
            features.append(nn.ReLU())
            in_channels = out_channels
        features.append(nn.MaxPool2d(2))
    features.append(nn.Flatten())
    _fully_connected_head(features, _flat_size(features, input_shape), (256, 256))
    return ZooModel(features, nn.Linear(256, num_classes), input_shape, num_classes)


# Configurations A, D and E of Simonyan & Zisserman (2015) as open_lth and the SynFlow code use
# them on CIFAR: the fifth max-pool is left out; "M" is a 2x2 max-pool.
_VGG_PLANS: dict[int, tuple[int | str, ...]] = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
    19: (
        64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
        512, 512, 512, 512, "M", 512, 512, 512, 512,
    ),
}  # fmt: skip


def _vgg(depth: int, input_shape: InputShape, num_classes: int) -> ZooModel:
    """CIFAR VGG of open_lth and the SynFlow code: 3x3 conv (padding 1, with bias) + BatchNorm +
    ReLU stacks, four max-pools, a global average pool and one Linear 512 -> classes.

    Those codes average-pool the final 2x2 map of a 32x32 input with a fixed 2x2 window; the
    global average pool is the same there and also accepts the 1x1 map of a 28x28 input.
    """
    features = nn.Sequential()
    in_channels = input_shape[0]
    for entry in _VGG_PLANS[depth]:
        if entry == "M":
            features.append(nn.MaxPool2d(2))
        else:
            features.append(nn.Conv2d(in_channels, entry, 3, padding=1))
            features.append(nn.BatchNorm2d(entry))
            features.append(nn.ReLU())
            in_channels = entry
    features.append(nn.AdaptiveAvgPool2d(1))
    features.append(nn.Flatten())
    return ZooModel(features, nn.Linear(in_channels, num_classes), input_shape, num_classes)


def _resnet(
    widths: Sequence[int], blocks_per_stage: int, input_shape: InputShape, num_classes: int
) -> ZooModel:
    """A ResNet for small images: a 3x3 stride-1 conv + BatchNorm stem (no max-pool), stages of
    `BasicBlock`s whose first block halves the resolution (except in the first stage), a global
    average pool and one Linear."""
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        conv=nn.Conv2d(input_shape[0], widths[0], 3, padding=1, bias=False),
        bn=nn.BatchNorm2d(widths[0]),
        relu=nn.ReLU(),
    )
    in_channels = widths[0]
    for stage, width in enumerate(widths, start=1):
        blocks = []
        for index in range(blocks_per_stage):
            stride = 2 if stage > 1 and index == 0 else 1
            blocks.append(BasicBlock(in_channels, width, stride))
            in_channels = width
        layers[f"stage{stage}"] = nn.Sequential(*blocks)
    layers["pool"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten()
    return ZooModel(
        nn.Sequential(layers), nn.Linear(in_channels, num_classes), input_shape, num_classes
    )


def _cifar_resnet(depth: int, input_shape: InputShape, num_classes: int) -> ZooModel:
    """The CIFAR ResNets of He et al. (2016): depth = 6n + 2, three stages of n blocks with 16,
    32 and 64 channels."""
    return _resnet((16, 32, 64), (depth - 2) // 6, input_shape, num_classes)


def _resnet18(input_shape: InputShape, num_classes: int) -> ZooModel:
    return _resnet((64, 128, 256, 512), 2, input_shape, num_classes)


@dataclass(frozen=True)
class ModelInfo:
    """A zoo entry: a one-line description and the builder (input shape, classes) -> model."""

    description: str
    build: Callable[[InputShape, int], ZooModel]


MODELS: dict[str, ModelInfo] = {
    "lenet300": ModelInfo("LeNet-300-100: fully connected 300-100, ReLU", _lenet300),
    "lenet5": ModelInfo("LeNet-5: convs 6@5x5 and 16@5x5 with max-pools, FC 120-84", _lenet5),
    "conv2": ModelInfo(
        "Conv-2 (Frankle & Carbin 2019): 3x3 convs 64-64, max-pool, FC 256-256",
        partial(_conv_net, 1),
    ),
    "conv4": ModelInfo(
        "Conv-4 (Frankle & Carbin 2019): 3x3 convs 64-64, 128-128 with max-pools, FC 256-256",
        partial(_conv_net, 2),
    ),
    "conv6": ModelInfo(
        "Conv-6 (Frankle & Carbin 2019): 3x3 convs 64-64, 128-128, 256-256 with max-pools, "
        "FC 256-256",
        partial(_conv_net, 3),
    ),
    "vgg11": ModelInfo(
        "VGG-11 (config A) with BatchNorm, global pool, one Linear", partial(_vgg, 11)
    ),
    "vgg16": ModelInfo(
        "VGG-16 (config D) with BatchNorm, global pool, one Linear", partial(_vgg, 16)
    ),
    "vgg19": ModelInfo(
        "VGG-19 (config E) with BatchNorm, global pool, one Linear", partial(_vgg, 19)
    ),
    "resnet20": ModelInfo(
        "ResNet-20 (He et al. 2016): 3 stages of 3 basic blocks, 16/32/64 channels",
        partial(_cifar_resnet, 20),
    ),
    "resnet32": ModelInfo(
        "ResNet-32 (He et al. 2016): 3 stages of 5 basic blocks, 16/32/64 channels",
        partial(_cifar_resnet, 32),
    ),
    "resnet56": ModelInfo(
        "ResNet-56 (He et al. 2016): 3 stages of 9 basic blocks, 16/32/64 channels",
        partial(_cifar_resnet, 56),
    ),
    "resnet18": ModelInfo(
        "ResNet-18, small-image variant: 3x3 stem, 4 stages of 2 basic blocks, 64-512 channels",
        _resnet18,
    ),
}


def available_models() -> list[str]:
    """The zoo's model names, in the order of `MODELS`."""
    return list(MODELS)


def _initialize(model: nn.Module, generator: torch.Generator) -> None:
    """SynFlow-code initialization of every parameter and buffer, drawn from `generator`."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_normal_(
                module.weight, mode="fan_in", nonlinearity="relu", generator=generator
            )
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            module.reset_parameters()  # weight 1, bias 0, running mean 0, running var 1
        elif list(module.parameters(recurse=False)) or list(module.buffers(recurse=False)):
            raise TypeError(f"no initialization rule for {type(module).__name__}")


def build_model(name: str, dataset: str | DatasetSpec, seed: int = 0) -> ZooModel:
    """The zoo model `name` shaped for `dataset` (input shape and classes), initialized from `seed`.

    The same name, dataset and seed give the same weights bit for bit; the model is on the CPU.
    """
    if name not in MODELS:
        raise unknown_name("model", name, MODELS)
    spec = dataset if isinstance(dataset, DatasetSpec) else dataset_spec(dataset)
    with torch.device("meta"):
        try:
            model = MODELS[name].build(spec.input_shape, spec.num_classes)
            model.eval()(torch.empty(2, *spec.input_shape))
        except RuntimeError as error:
            raise PaiError(
                f"model {name!r} cannot take inputs of shape {spec.input_shape} "
                f"(dataset {spec.name!r}): {error}"
            ) from None
    model.train().to_empty(device="cpu")
    _initialize(model, torch.Generator().manual_seed(seed))
    return model


def model_input_shape(
    model: nn.Module, input_shape: Sequence[int] | None = None
) -> tuple[int, ...]:
    """The shape of one input example (C, H, W for images), without the batch dimension.

    An explicit `input_shape` wins; otherwise the `input_shape` a zoo model records. Other
    modules need the argument: an input shape cannot be read from a network's weights.
    """
    shape = input_shape if input_shape is not None else getattr(model, "input_shape", None)
    if shape is None:
        raise PaiError(
            f"the input shape of {type(model).__name__} is not known; pass input_shape=, "
            "e.g. input_shape=(3, 32, 32)"
        )
    dims = tuple(int(dim) for dim in shape)
    if not dims or any(dim < 1 for dim in dims):
        raise PaiError(f"input_shape must be positive sizes such as (3, 32, 32), got {shape!r}")
    return dims
