"""What the PyTorch examples share: the data, the model, and a fingerprint of the weights.

The data is scikit-learn's handwritten digits (1,797 8x8 images), which ship inside the
scikit-learn wheel: nothing is downloaded at run time, so the examples run offline and in CI.
"""

from __future__ import annotations

import hashlib

import torch

#: The split never depends on --seed: every run is scored on the same held-out images.
SPLIT_SEED = 20240229
TEST_SHARE = 0.2


def load() -> tuple[torch.utils.data.TensorDataset, torch.utils.data.TensorDataset]:
    """(train, test) as float images of shape (1, 8, 8) in [0, 1] and integer labels."""
    from sklearn.datasets import load_digits  # imported here: only the data needs scikit-learn

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_test = int(len(y) * TEST_SHARE)
    test, train = order[:n_test], order[n_test:]
    return (
        torch.utils.data.TensorDataset(x[train], y[train]),
        torch.utils.data.TensorDataset(x[test], y[test]),
    )


def model(width: int = 32) -> torch.nn.Module:
    """A small CNN: about 99% test accuracy on the digits after a few epochs."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, width, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(width, 2 * width, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Dropout(0.25),
        torch.nn.Linear(2 * width * 16, 128),
        torch.nn.ReLU(),
        torch.nn.Linear(128, 10),
    )


@torch.no_grad()
def accuracy(net: torch.nn.Module, data: torch.utils.data.TensorDataset) -> float:
    was_training = net.training
    net.eval()
    x, y = data.tensors
    correct = (net(x).argmax(dim=1) == y).sum().item()
    net.train(was_training)
    return correct / len(y)


def weights_sha256(net: torch.nn.Module) -> str:
    """A fingerprint of the weights: equal only when every parameter is bit-identical."""
    h = hashlib.sha256()
    for name, tensor in net.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
