"""Small models of the kinds practitioners debug, for the any-module diagnostics tests.

Also copied verbatim into a temporary folder by tests/test_cli_diagnose.py, so it imports only
torch. Input shapes: ResNet (batch, 3, 8, 8); Transformer (batch, 5, 8); GRU/LSTM (batch, 6, 3);
dict model (batch, 4).
"""

from __future__ import annotations

import torch
from torch import nn

INPUT_SHAPES = {
    "make_resnet": (3, 8, 8),
    "make_transformer": (5, 8),
    "make_gru": (6, 3),
    "make_lstm": (6, 3),
    "make_dict_model": (4,),
}


class BasicBlock(nn.Module):
    """The ResNet basic block: conv-BN-ReLU-conv-BN plus a shortcut (1x1 conv + BN when the
    shape changes), ReLU in place as in torchvision."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return self.relu(out)


class ResNet(nn.Module):
    def __init__(self, widths: tuple[int, ...] = (4, 8), classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(BasicBlock(cin, w, 1 if i == 0 else 2))
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def randomise_batchnorm_(model: nn.Module, seed: int) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
    return model


class TransformerClassifier(nn.Module):
    def __init__(self, d: int = 8, classes: int = 3) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(d, 2, 16, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).mean(dim=1))


class RecurrentClassifier(nn.Module):
    def __init__(self, cell: type[nn.RNNBase] = nn.GRU, classes: int = 3) -> None:
        super().__init__()
        self.rnn = cell(3, 6, num_layers=2, batch_first=True)
        self.head = nn.Linear(6, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)  # a tuple output
        return self.head(out[:, -1])


class TwoHeads(nn.Module):
    """Returns a dict: class logits and a regression value."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 6)
        self.cls = nn.Linear(6, 3)
        self.reg = nn.Linear(6, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.tanh(self.body(x))
        return {"logits": self.cls(h), "value": self.reg(h)}


def make_resnet() -> nn.Module:
    torch.manual_seed(0)
    return randomise_batchnorm_(ResNet(), 0)


def make_transformer() -> nn.Module:
    torch.manual_seed(0)
    return TransformerClassifier()


def make_gru() -> nn.Module:
    torch.manual_seed(0)
    return RecurrentClassifier(nn.GRU)


def make_lstm() -> nn.Module:
    torch.manual_seed(0)
    return RecurrentClassifier(nn.LSTM)


def make_dict_model() -> nn.Module:
    torch.manual_seed(0)
    return TwoHeads()


def dict_loss(out: dict[str, torch.Tensor]) -> torch.Tensor:
    """A scalar loss of the dict output: both heads."""
    return out["logits"].square().sum() + out["value"].abs().sum()
