"""ImageSet / Splits: stratified seeded validation split, subset, mean/std."""
import pytest
import torch

from cifarbench.data import ImageSet, Splits
from cifarbench.data.splits import make_splits, stratified_split
from cifarbench.errors import CifarbenchError


def imageset(counts, size=4, channels=3, seed=0):
    """An ImageSet with counts[c] images of class c, labels interleaved, random pixels."""
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]
    g = torch.Generator().manual_seed(seed + 1)
    images = torch.randint(0, 256, (len(labels), channels, size, size), generator=g, dtype=torch.uint8)
    return ImageSet(images, labels)


def test_stratified_counts_are_exact_and_proportional():
    labels = imageset([500, 300, 200]).labels
    keep, val = stratified_split(labels, 100, seed=0)
    assert torch.bincount(labels[val]).tolist() == [50, 30, 20]
    assert len(keep) + len(val) == 1000
    assert len(set(keep.tolist()) | set(val.tolist())) == 1000  # disjoint and covering


def test_largest_remainder_rounding_keeps_the_total():
    labels = imageset([7, 7, 7]).labels
    _, val = stratified_split(labels, 10, seed=3)
    counts = torch.bincount(labels[val], minlength=3).tolist()
    assert sum(counts) == 10 and sorted(counts) == [3, 3, 4]


def test_split_is_seeded():
    labels = imageset([100] * 5).labels
    a = stratified_split(labels, 50, seed=1)[1]
    b = stratified_split(labels, 50, seed=1)[1]
    c = stratified_split(labels, 50, seed=2)[1]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_make_splits_leaves_test_alone():
    train, test = imageset([40, 40]), imageset([10, 10], seed=5)
    s = make_splits("toy", ["a", "b"], train, test, val_size=20, seed=0)
    assert s.test is test
    assert (len(s.train), len(s.val)) == (60, 20)
    assert s.val.counts(2) == [10, 10] and s.train.counts(2) == [30, 30]
    assert (s.num_classes, s.channels, s.image_size) == (2, 3, 4)


def test_val_size_zero_gives_an_empty_split():
    train = imageset([10, 10])
    s = make_splits("toy", ["a", "b"], train, imageset([2, 2]), val_size=0)
    assert len(s.val) == 0 and s.val.images.shape == (0, 3, 4, 4) and len(s.train) == 20


@pytest.mark.parametrize("val_size, match", [(20, "validation size 20 must be smaller than the 20 training images"),
                                             (25, "must be smaller"), (-1, "must be >= 0, got -1")])
def test_bad_val_size(val_size, match):
    with pytest.raises(CifarbenchError, match=match):
        make_splits("toy", ["a", "b"], imageset([10, 10]), imageset([2, 2]), val_size=val_size)


def test_subset_is_stratified_and_keeps_val_and_test():
    s = make_splits("toy", list("abcd"), imageset([100, 100, 50, 50]), imageset([5] * 4), val_size=30)
    sub = s.subset(train=54, seed=0)
    assert len(sub.train) == 54 and sub.train.counts(4) == [18, 18, 9, 9]
    assert sub.val is s.val and sub.test is s.test
    assert torch.equal(s.subset(54, seed=0).train.labels, sub.train.labels)
    assert s.subset(None) is s and s.subset(10_000) is s
    with pytest.raises(CifarbenchError, match="positive"):
        s.subset(0)


def test_mean_std_from_train_only_and_cached():
    train = imageset([30, 30], channels=3, seed=1)
    test = ImageSet(torch.full((4, 3, 4, 4), 255, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]))
    s = Splits("toy", ["a", "b"], train, train, test)
    x = train.images.double() / 255
    assert s.mean == pytest.approx(x.mean((0, 2, 3)).tolist(), abs=1e-9)
    assert s.std == pytest.approx(x.std((0, 2, 3), unbiased=False).tolist(), abs=1e-9)
    assert s._stats is not None and s.mean is s._stats[0]


def test_imageset_checks_types():
    with pytest.raises(ValueError):
        ImageSet(torch.zeros(2, 3, 4, 4), torch.zeros(2))  # float images
    with pytest.raises(ValueError):
        ImageSet(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(3))
    s = ImageSet(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int32))
    assert s.labels.dtype == torch.int64 and len(s) == 2
