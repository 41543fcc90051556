"""folder:PATH datasets: ImageFolder round trip, the decode cache, and bad layouts or images."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from cifarbench.data import folder as folder_mod
from cifarbench.data import load_dataset
from cifarbench.errors import CifarbenchError

CLASSES = ["cat", "ant", "bee"]  # sorted: ant, bee, cat


def make_folder(root, n_train=10, n_test=3, size=(8, 8)):
    """root/{train,test}/<class>/*.png; pixel (0, 0) of image i of class c holds (c, i, 7)."""
    for split, n in (("train", n_train), ("test", n_test)):
        for c in sorted(CLASSES):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                a = np.zeros((size[1], size[0], 3), dtype=np.uint8)
                a[0, 0] = (sorted(CLASSES).index(c), i, 7)
                Image.fromarray(a).save(d / f"{i:03d}.png")
    return root


def test_round_trip(tmp_path):
    root = make_folder(tmp_path / "imgs")
    s = load_dataset(f"folder:{root}", data_dir=tmp_path / "data", val_size=0)
    assert s.classes == ["ant", "bee", "cat"]
    assert s.train.images.shape == (30, 3, 8, 8) and s.test.images.shape == (9, 3, 8, 8)
    # the label matches the class folder and the pixels survive the NHWC -> NCHW move
    assert torch.equal(s.train.images[:, 0, 0, 0].long(), s.train.labels)
    assert s.train.images[:, 2, 0, 0].eq(7).all() and s.train.counts(3) == [10, 10, 10]


def test_default_val_is_ten_percent(tmp_path):
    root = make_folder(tmp_path / "imgs")
    s = load_dataset(f"folder:{root}", data_dir=tmp_path / "data")
    assert (len(s.train), len(s.val)) == (27, 3) and s.val.counts(3) == [1, 1, 1]


def test_second_load_hits_the_cache_and_changes_invalidate_it(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "imgs")
    data = tmp_path / "data"
    first = load_dataset(f"folder:{root}", data_dir=data, val_size=0)
    assert len(list((data / "cache").glob("folder-imgs-*.npz"))) == 1

    def no_decoding(path):
        raise AssertionError(f"decoded {path} despite the cache")

    monkeypatch.setattr(folder_mod, "_decode", no_decoding)
    again = load_dataset(f"folder:{root}", data_dir=data, val_size=0)
    assert torch.equal(first.train.images, again.train.images) and torch.equal(first.test.labels, again.test.labels)

    # a touched file changes the key: the images are decoded again
    path = root / "train" / "ant" / "000.png"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="despite the cache"):
        load_dataset(f"folder:{root}", data_dir=data, val_size=0)


def test_damaged_cache_is_rebuilt(tmp_path, capsys):
    root = make_folder(tmp_path / "imgs")
    data = tmp_path / "data"
    load_dataset(f"folder:{root}", data_dir=data, val_size=0)
    cache = next((data / "cache").glob("*.npz"))
    cache.write_bytes(b"junk")
    s = load_dataset(f"folder:{root}", data_dir=data, val_size=0)
    assert len(s.train) == 30 and "ignoring unreadable cache" in capsys.readouterr().err


def test_mixed_sizes_name_the_file(tmp_path):
    root = make_folder(tmp_path / "imgs")
    odd = root / "train" / "bee" / "005.png"
    Image.new("RGB", (9, 8)).save(odd)
    with pytest.raises(CifarbenchError, match=f"{odd}: image is 9x8 but .* is 8x8; all images must have the same size"):
        load_dataset(f"folder:{root}", data_dir=tmp_path / "data")


def test_corrupt_image(tmp_path):
    root = make_folder(tmp_path / "imgs")
    bad = root / "test" / "cat" / "001.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(CifarbenchError, match=f"{bad}: cannot decode image"):
        load_dataset(f"folder:{root}", data_dir=tmp_path / "data")


def test_grayscale_and_rgba_become_rgb(tmp_path):
    root = make_folder(tmp_path / "imgs", n_train=2, n_test=1)
    Image.new("L", (8, 8), 200).save(root / "train" / "ant" / "000.png")
    Image.new("RGBA", (8, 8), (1, 2, 3, 4)).save(root / "train" / "ant" / "001.png")
    s = load_dataset(f"folder:{root}", data_dir=tmp_path / "data", val_size=0)
    assert s.train.images[0, :, 0, 0].tolist() == [200, 200, 200]
    assert s.train.images[1, :, 0, 0].tolist() == [1, 2, 3]


@pytest.mark.parametrize("breakage, match", [
    ("no-root", "does not exist"),
    ("no-train", "missing .*train"),
    ("no-test", "missing .*test"),
    ("extra-test-class", "class 'dog' is not among the train/ classes"),
    ("empty-test", "no images under"),
])
def test_bad_layouts(tmp_path, breakage, match):
    root = tmp_path / "imgs"
    if breakage != "no-root":
        make_folder(root, n_train=2, n_test=1)
    if breakage == "no-train":
        os.rename(root / "train", root / "training")
    elif breakage == "no-test":
        os.rename(root / "test", root / "testing")
    elif breakage == "extra-test-class":
        (root / "test" / "dog").mkdir()
    elif breakage == "empty-test":
        for f in (root / "test").rglob("*.png"):
            f.unlink()
    with pytest.raises(CifarbenchError, match=match):
        load_dataset(f"folder:{root}", data_dir=tmp_path / "data")
