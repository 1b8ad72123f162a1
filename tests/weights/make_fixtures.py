"""Writes the weight-import fixtures with PyTorch (run once, by hand; the tests never need torch):

    python tests/weights/make_fixtures.py

- lenet5.safetensors: examples/lenet5.cnn as a PyTorch module (torch.manual_seed(0) initialization);
- narrow_resnet.safetensors: tests/weights/narrow_resnet.cnn as a PyTorch module, its batch-norm running
  statistics set to random values, so importing them matters;
- *.logits.npz: a fixed input (NCHW for torch, saved NHWC for cnndsl) and the module's eval-mode output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

HERE = Path(__file__).resolve().parent


class LeNet5(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.avg_pool2d(torch.tanh(self.conv1(x)), 2)
        x = nn.functional.avg_pool2d(torch.tanh(self.conv2(x)), 2)
        x = torch.tanh(self.fc1(x.flatten(1)))  # C, H, W flattening: the import reorders it
        return self.fc3(torch.tanh(self.fc2(x)))


class Basic(nn.Module):
    def __init__(self, cin: int, c: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
        self.downsample = nn.Sequential(nn.Conv2d(cin, c, 1, stride, bias=False), nn.BatchNorm2d(c)) \
            if stride != 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(out + (self.downsample(x) if self.downsample is not None else x))


class NarrowResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8)
        self.layer1, self.layer2 = Basic(8, 8), Basic(8, 16, 2)
        self.fc1, self.fc2 = nn.Linear(16 * 6 * 6, 32), nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        x = self.layer2(self.layer1(x))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def write(name: str, module: nn.Module, shape: tuple[int, ...]) -> None:
    generator = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):  # running statistics and affine parameters that are not the defaults
            m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=generator) * 0.2)
    module.eval()
    x = torch.randn(2, *shape, generator=generator)
    with torch.no_grad():
        logits = module(x)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(HERE / f"{name}.safetensors"))
    np.savez(HERE / f"{name}.logits.npz", x=x.permute(0, 2, 3, 1).numpy(), logits=logits.numpy())


if __name__ == "__main__":
    torch.manual_seed(0)
    write("lenet5", LeNet5(), (1, 32, 32))
    write("narrow_resnet", NarrowResNet(), (3, 24, 24))
