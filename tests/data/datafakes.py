"""Tiny fake dataset files for the data tests: Python-2-style CIFAR pickles, idx files, archives."""
import gzip
import pickle
import struct
import tarfile

import numpy as np


def cifar_batch(n, num_classes=10, seed=0, label_key=b"labels", shape=3072, labels=None):
    """A Python-2-style CIFAR batch dict: bytes keys, uint8 data (n, 3072), a list of int labels."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, shape), dtype=np.uint8)
    if labels is None:
        labels = [i % num_classes for i in range(n)]
    return {b"batch_label": b"fake batch", label_key: labels, b"data": data,
            b"filenames": [f"img_{i}.png".encode() for i in range(n)]}


def write_pickle(path, obj):
    path.write_bytes(pickle.dumps(obj, protocol=2))


def tar_folder(archive, folder, arcname):
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return archive


def write_idx(path, array, magic_ndim=None, gz=False):
    """An unsigned-byte idx file: magic 0x000008<ndim>, big-endian dims, raw bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    ndim = array.ndim if magic_ndim is None else magic_ndim
    raw = bytes([0, 0, 8, ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path
