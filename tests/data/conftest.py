"""Fixtures for the data tests: tiny fake datasets written into tmp_path, never real data."""
import numpy as np
import pytest
from datafakes import cifar_batch, write_idx, write_pickle


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """Every data test starts with no MD5 warning issued, no system idx folders, no download address."""
    from cifarbench.data import cifar, idx

    monkeypatch.setattr(cifar, "_warned", set())
    monkeypatch.setattr(idx, "SYSTEM_DIRS", {"mnist": [], "fashion-mnist": []})
    # Any test that forgets to point the URL somewhere fails fast instead of reaching the network.
    monkeypatch.setattr(cifar, "URLS", {k: "http://127.0.0.1:9/unreachable.tar.gz" for k in cifar.URLS})
    monkeypatch.setenv("CIFARBENCH_DATA", str(tmp_path / "default-data-dir"))


@pytest.fixture
def make_cifar10():
    """make_cifar10(data_dir, n=20) writes data_dir/cifar-10-batches-py with n images per batch file."""

    def make(data_dir, n=20):
        folder = data_dir / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for b in range(5):
            write_pickle(folder / f"data_batch_{b + 1}", cifar_batch(n, seed=b))
        write_pickle(folder / "test_batch", cifar_batch(n, seed=9))
        names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
        write_pickle(folder / "batches.meta", {b"label_names": names, b"num_cases_per_batch": n, b"num_vis": 3072})
        return folder

    return make


@pytest.fixture
def make_cifar100():
    def make(data_dir, n=200):
        folder = data_dir / "cifar-100-python"
        folder.mkdir(parents=True)
        for name, seed in (("train", 1), ("test", 2)):
            batch = cifar_batch(n, num_classes=100, seed=seed, label_key=b"fine_labels")
            batch[b"coarse_labels"] = [i % 20 for i in range(n)]
            write_pickle(folder / name, batch)
        write_pickle(folder / "meta", {b"fine_label_names": [f"class{i}".encode() for i in range(100)],
                                       b"coarse_label_names": [f"super{i}".encode() for i in range(20)]})
        return folder

    return make


@pytest.fixture
def make_idx():
    """make_idx(folder, n_train, n_test, gz) writes the four Fashion-MNIST-style idx files."""

    def make(folder, n_train=40, n_test=20, gz=False):
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        ext = ".gz" if gz else ""
        for split, n in (("train", n_train), ("t10k", n_test)):
            write_idx(folder / f"{split}-images-idx3-ubyte{ext}", rng.integers(0, 256, (n, 28, 28)), gz=gz)
            write_idx(folder / f"{split}-labels-idx1-ubyte{ext}", np.arange(n) % 10, gz=gz)
        return folder

    return make
