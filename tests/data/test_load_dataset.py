"""load_dataset's front door: names, aliases, data-dir resolution, default validation sizes."""
from pathlib import Path

import pytest

from cifarbench.data import canonical_name, default_val_size, list_datasets, load_dataset, resolve_data_dir
from cifarbench.errors import CifarbenchError


def test_list_datasets():
    assert list_datasets() == ["cifar10", "cifar100", "fashion-mnist", "mnist", "shapes", "folder:PATH"]


def test_unknown_name_lists_valid_names_closest_first():
    with pytest.raises(CifarbenchError) as e:
        load_dataset("cifar1O")
    msg = str(e.value)
    assert msg.startswith("unknown dataset 'cifar1O'; valid names: cifar10, cifar100, ")
    assert all(n in msg for n in list_datasets())
    with pytest.raises(CifarbenchError, match="valid names: fashion-mnist, mnist"):
        load_dataset("fashon-mnist")


@pytest.mark.parametrize("alias, name", [("CIFAR-10", "cifar10"), ("cifar-100", "cifar100"),
                                         ("fashion_mnist", "fashion-mnist"), ("FashionMNIST", "fashion-mnist"),
                                         ("Shapes", "shapes"), ("folder:/x/y", "folder:/x/y")])
def test_aliases(alias, name):
    assert canonical_name(alias) == name


def test_folder_needs_a_path():
    with pytest.raises(CifarbenchError, match="needs a path"):
        load_dataset("folder:")


def test_resolve_data_dir(monkeypatch, tmp_path):
    assert resolve_data_dir(tmp_path / "x") == tmp_path / "x"
    assert resolve_data_dir("~/d") == Path.home() / "d"
    monkeypatch.setenv("CIFARBENCH_DATA", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("CIFARBENCH_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir() == tmp_path / "xdg" / "cifarbench"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert resolve_data_dir() == Path.home() / ".cache" / "cifarbench"


def test_default_val_sizes():
    assert [default_val_size(n, 50_000) for n in ("cifar10", "cifar100", "mnist", "fashion-mnist")] == [5000] * 4
    assert default_val_size("shapes", 12_000) == 2000
    assert default_val_size("folder:/some/where", 1234) == 123
