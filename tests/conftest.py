"""Shared fixtures: small generated data only; no test reads a real dataset."""
import os

import pytest
import torch

# Two cores on CI: keep every test process at one intra-op thread unless a test says otherwise.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def tiny_splits():
    """A 4-class, 12×12 RGB dataset whose class is the colour of a square: learnable in one epoch."""
    from cifarbench.data import ImageSet, Splits

    def make(n, seed):
        g = torch.Generator().manual_seed(seed)
        labels = torch.arange(n) % 4
        images = torch.randint(0, 60, (n, 3, 12, 12), generator=g, dtype=torch.uint8)
        colours = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=torch.uint8)
        images[:, :, 3:9, 3:9] = colours[labels].view(n, 3, 1, 1)
        return ImageSet(images, labels)

    return Splits("tiny", ["red", "green", "blue", "yellow"], make(256, 1), make(64, 2), make(64, 3))
