"""CIFAR loader: layout, validation messages, the MD5 warning, archives and (offline) downloads."""
import dataclasses
import hashlib
import os
import pickle

import numpy as np
import pytest
import torch
from datafakes import cifar_batch, tar_folder, write_pickle

from cifarbench.data import cifar, load_dataset
from cifarbench.errors import CifarbenchError


def test_loads_python2_pickles_into_nchw(tmp_path, make_cifar10):
    folder = make_cifar10(tmp_path, n=20)
    s = load_dataset("cifar10", data_dir=tmp_path, val_size=10, seed=0)
    assert (len(s.train), len(s.val), len(s.test)) == (90, 10, 20)
    assert s.train.images.dtype == torch.uint8 and s.train.images.shape[1:] == (3, 32, 32)
    assert s.train.images.is_contiguous() and s.train.labels.dtype == torch.int64
    assert s.classes[0] == "airplane" and s.num_classes == 10
    # the 3072 bytes of a row are the R, G and B planes in turn
    row = pickle.loads((folder / "test_batch").read_bytes())[b"data"][0]
    assert torch.equal(s.test.images[0, 1].flatten(), torch.from_numpy(row[1024:2048].copy()))


def test_cifar100(tmp_path, make_cifar100):
    make_cifar100(tmp_path, n=200)
    s = load_dataset("cifar100", data_dir=tmp_path, val_size=100)
    assert s.num_classes == 100 and s.classes[7] == "class7"
    assert (len(s.train), len(s.val), len(s.test)) == (100, 100, 200)
    assert s.val.counts(100) == [1] * 100


def test_md5_warning_exactly_once(tmp_path, make_cifar10, capsys):
    make_cifar10(tmp_path)
    load_dataset("cifar10", data_dir=tmp_path, val_size=10)
    load_dataset("cifar10", data_dir=tmp_path, val_size=10)
    err = capsys.readouterr().err
    assert err.count("warning:") == 1
    assert "differ from the official CIFAR-10 files (MD5" in err
    assert "100 train / 20 test images instead of 50,000 / 10,000" in err
    assert "accuracies may not match published numbers" in err


def _error(tmp_path):
    with pytest.raises(CifarbenchError) as e:
        load_dataset("cifar10", data_dir=tmp_path, val_size=10)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_missing_file(tmp_path, make_cifar10):
    folder = make_cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    msg = _error(tmp_path)
    assert "missing CIFAR-10 file(s) data_batch_3" in msg and str(folder) in msg


def test_truncated_pickle(tmp_path, make_cifar10):
    folder = make_cifar10(tmp_path)
    blob = (folder / "data_batch_2").read_bytes()
    (folder / "data_batch_2").write_bytes(blob[: len(blob) // 2])
    msg = _error(tmp_path)
    assert str(folder / "data_batch_2") in msg and "truncated pickle" in msg


def test_empty_file_is_truncated(tmp_path, make_cifar10):
    folder = make_cifar10(tmp_path)
    (folder / "test_batch").write_bytes(b"")
    assert "test_batch: truncated pickle" in _error(tmp_path)


def test_garbage_bytes(tmp_path, make_cifar10):
    folder = make_cifar10(tmp_path)
    (folder / "data_batch_1").write_bytes(b"this is not a pickle at all" * 10)
    msg = _error(tmp_path)
    assert str(folder / "data_batch_1") in msg and "not a CIFAR pickle" in msg


def test_pickle_of_wrong_type(tmp_path, make_cifar10):
    folder = make_cifar10(tmp_path)
    write_pickle(folder / "data_batch_1", [1, 2, 3])
    assert "data_batch_1: not a CIFAR pickle (holds a list, expected a dict)" in _error(tmp_path)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_code_in_pickle_is_refused(tmp_path, make_cifar10):
    folder = make_cifar10(tmp_path)
    write_pickle(folder / "data_batch_4", {b"data": _Evil()})
    msg = _error(tmp_path)
    assert "data_batch_4" in msg and "disallowed global" in msg and "system" in msg


def test_wrong_shape(tmp_path, make_cifar10):
    folder = make_cifar10(tmp_path)
    write_pickle(folder / "data_batch_5", cifar_batch(20, shape=1024))
    msg = _error(tmp_path)
    assert "data_batch_5: 'data' must be a uint8 array of shape (N, 3072), got uint8 (20, 1024)" in msg


def test_wrong_dtype(tmp_path, make_cifar10):
    folder = make_cifar10(tmp_path)
    batch = cifar_batch(20)
    batch[b"data"] = batch[b"data"].astype(np.float32)
    write_pickle(folder / "data_batch_5", batch)
    assert "got float32 (20, 3072)" in _error(tmp_path)


def test_labels_out_of_range(tmp_path, make_cifar10):
    folder = make_cifar10(tmp_path)
    write_pickle(folder / "test_batch", cifar_batch(20, labels=[0] * 19 + [10]))
    assert "test_batch: label 10 out of range 0..9" in _error(tmp_path)


def test_label_count_mismatch(tmp_path, make_cifar10):
    folder = make_cifar10(tmp_path)
    write_pickle(folder / "data_batch_1", cifar_batch(20, labels=[0] * 19))
    assert "data_batch_1: 20 images but 'labels' has shape (19,)" in _error(tmp_path)


def test_missing_key(tmp_path, make_cifar10):
    folder = make_cifar10(tmp_path)
    batch = cifar_batch(20)
    del batch[b"labels"]
    write_pickle(folder / "data_batch_1", batch)
    assert "data_batch_1: missing key 'labels'" in _error(tmp_path)


def test_bad_meta(tmp_path, make_cifar10):
    folder = make_cifar10(tmp_path)
    write_pickle(folder / "batches.meta", {b"label_names": [b"a", b"b"]})
    assert "batches.meta: expected 10 names under 'label_names', found 2" in _error(tmp_path)


# ---------------------------------------------------------------- archives and downloads
def _archive(tmp_path, make_cifar10):
    """A cifar-10-python.tar.gz (fake content) in a separate folder; returns its path and MD5."""
    src = tmp_path / "src"
    folder = make_cifar10(src)
    archive = tar_folder(src / "cifar-10-python.tar.gz", folder, "cifar-10-batches-py")
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


def test_placed_archive_is_extracted_with_one_warning(tmp_path, make_cifar10, capsys):
    archive, _ = _archive(tmp_path, make_cifar10)
    data = tmp_path / "data"
    data.mkdir()
    os.replace(archive, data / archive.name)
    s = load_dataset("cifar10", data_dir=data, val_size=10)
    assert len(s.test) == 20 and (data / "cifar-10-batches-py" / "data_batch_1").is_file()
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "differs from the official CIFAR-10 archive (MD5)" in err
    assert not [p for p in os.listdir(data) if p.startswith(".")]  # no temp folders left


def test_offline_download_names_file_and_folder(tmp_path):
    data = tmp_path / "data"
    with pytest.raises(CifarbenchError) as e:
        load_dataset("cifar10", data_dir=data)
    msg = str(e.value)
    assert msg.startswith("cannot download cifar-10-python.tar.gz from http://127.0.0.1:9/")
    assert msg.endswith(f"place it (or the extracted cifar-10-batches-py/ folder) in {data}")
    assert "\n" not in msg
    assert not data.exists() or not os.listdir(data)  # no partial file left


def test_download_from_injected_url(tmp_path, make_cifar10, monkeypatch):
    archive, md5 = _archive(tmp_path, make_cifar10)
    monkeypatch.setitem(cifar.URLS, "cifar10", archive.as_uri())
    monkeypatch.setitem(cifar.SPECS, "cifar10", dataclasses.replace(cifar.SPECS["cifar10"], archive_md5=md5))
    data = tmp_path / "data"
    s = load_dataset("cifar10", data_dir=data, val_size=10)
    assert len(s.train) == 90 and (data / "cifar-10-python.tar.gz").is_file()


def test_download_with_wrong_md5_is_deleted(tmp_path, make_cifar10, monkeypatch):
    archive, md5 = _archive(tmp_path, make_cifar10)
    monkeypatch.setitem(cifar.URLS, "cifar10", archive.as_uri())  # the real (official) MD5 will not match
    data = tmp_path / "data"
    with pytest.raises(CifarbenchError, match=f"has MD5 {md5}, expected c58f30108f718f92721af3b95e74349a"):
        load_dataset("cifar10", data_dir=data)
    assert os.listdir(data) == []


def test_download_disabled(tmp_path):
    with pytest.raises(CifarbenchError, match="CIFAR-100 not found and download disabled; place cifar-100-python.tar.gz"):
        load_dataset("cifar100", data_dir=tmp_path, download=False)


def test_archive_without_the_folder(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "readme.txt").write_text("hi")
    tar_folder(tmp_path / "cifar-10-python.tar.gz", other, "something-else")
    with pytest.raises(CifarbenchError, match="has no cifar-10-batches-py/ folder"):
        load_dataset("cifar10", data_dir=tmp_path)
