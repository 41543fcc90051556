"""MNIST / Fashion-MNIST idx files: round trip, search folders, validation messages."""
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from datafakes import write_idx

from cifarbench.data import idx, load_dataset
from cifarbench.errors import CifarbenchError


@pytest.mark.parametrize("gz", [False, True])
def test_round_trip(tmp_path, make_idx, gz):
    folder = make_idx(tmp_path / "fashion-mnist", n_train=40, n_test=20, gz=gz)
    s = load_dataset("fashion-mnist", data_dir=tmp_path, val_size=10)
    assert (len(s.train), len(s.val), len(s.test)) == (30, 10, 20)
    assert s.train.images.shape[1:] == (1, 28, 28) and s.train.images.dtype == torch.uint8
    assert s.classes[0] == "T-shirt/top" and s.channels == 1 and s.image_size == 28
    raw = (folder / f"t10k-images-idx3-ubyte{'.gz' if gz else ''}").read_bytes()
    raw = gzip.decompress(raw) if gz else raw
    assert s.test.images[3, 0].flatten().tolist() == list(raw[16 + 3 * 784: 16 + 4 * 784])
    assert s.test.labels.tolist() == [i % 10 for i in range(20)]


def test_torchvision_layout_and_mnist(tmp_path, make_idx):
    make_idx(tmp_path / "MNIST" / "raw")
    s = load_dataset("mnist", data_dir=tmp_path, val_size=0)
    assert s.classes == [str(i) for i in range(10)] and len(s.train) == 40


def test_system_folder_is_searched(tmp_path, make_idx, monkeypatch):
    system = make_idx(tmp_path / "usr-share")
    monkeypatch.setitem(idx.SYSTEM_DIRS, "fashion-mnist", [system])
    assert len(load_dataset("fashion-mnist", data_dir=tmp_path / "empty", val_size=5).test) == 20


def test_not_found_names_files_and_folders(tmp_path):
    with pytest.raises(CifarbenchError) as e:
        load_dataset("fashion-mnist", data_dir=tmp_path)
    msg = str(e.value)
    assert msg.startswith("Fashion-MNIST not found: place train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz]")
    assert f"in {tmp_path / 'fashion-mnist'}" in msg and "\n" not in msg


def test_half_filled_folder(tmp_path, make_idx):
    folder = make_idx(tmp_path / "fashion-mnist")
    (folder / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(CifarbenchError, match=r"fashion-mnist: missing Fashion-MNIST file\(s\) t10k-labels-idx1-ubyte"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_bad_magic(tmp_path, make_idx):
    folder = make_idx(tmp_path / "fashion-mnist")
    write_idx(folder / "train-labels-idx1-ubyte", np.zeros((40, 28, 28)))  # an image file in the labels' place
    with pytest.raises(CifarbenchError, match="train-labels-idx1-ubyte: bad idx magic 00000803, expected 00000801"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_truncated(tmp_path, make_idx):
    folder = make_idx(tmp_path / "fashion-mnist")
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CifarbenchError, match=r"train-images-idx3-ubyte: 31,276 bytes, expected 31,376 .*truncated"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_bad_gzip(tmp_path, make_idx):
    folder = make_idx(tmp_path / "fashion-mnist", gz=True)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8bnot gzip")
    with pytest.raises(CifarbenchError, match="t10k-images-idx3-ubyte.gz: cannot read"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_count_mismatch_and_label_range(tmp_path, make_idx):
    folder = make_idx(tmp_path / "fashion-mnist")
    write_idx(folder / "train-labels-idx1-ubyte", np.arange(39) % 10)
    with pytest.raises(CifarbenchError, match="39 labels for the 40 images"):
        load_dataset("fashion-mnist", data_dir=tmp_path)
    write_idx(folder / "train-labels-idx1-ubyte", np.full(40, 12))
    with pytest.raises(CifarbenchError, match="label 12 out of range 0..9"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_wrong_image_size(tmp_path, make_idx):
    folder = make_idx(tmp_path / "fashion-mnist")
    write_idx(folder / "t10k-images-idx3-ubyte", np.zeros((20, 32, 32)))
    with pytest.raises(CifarbenchError, match="images are 32x32, expected 28x28"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not (DEBIAN / "train-images-idx3-ubyte.gz").exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_debian_package_files_are_found(tmp_path, monkeypatch):
    monkeypatch.setitem(idx.SYSTEM_DIRS, "fashion-mnist", [DEBIAN])
    files = idx.find_files("fashion-mnist", tmp_path)
    assert files["train_images"] == DEBIAN / "train-images-idx3-ubyte.gz"
    assert idx.read_idx(files["test_labels"], 1).shape == (10000,)
