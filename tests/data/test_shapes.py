"""The generated shapes dataset: determinism, balance, format, and the default splits."""
import torch

from cifarbench.data import load_dataset, shapes


def test_same_seed_same_tensor():
    a, b = shapes.generate(300, "train", seed=5), shapes.generate(300, "train", seed=5)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    c = shapes.generate(300, "train", seed=6)
    assert not torch.equal(a.images, c.images)


def test_splits_use_disjoint_streams_and_prefixes_are_stable():
    train, test = shapes.generate(200, "train"), shapes.generate(200, "test")
    assert not torch.equal(train.images, test.images)
    longer = shapes.generate(1200, "train")
    assert torch.equal(longer.images[:200], train.images)  # n does not change the first images


def test_format_and_balance():
    s = shapes.generate(1000, "train")
    assert s.images.shape == (1000, 3, 32, 32) and s.images.dtype == torch.uint8 and s.images.is_contiguous()
    assert s.counts(10) == [100] * 10  # each chunk of 1,000 is balanced
    # not degenerate: every image has both shape and background variation, labels are shuffled
    assert s.images.float().std((1, 2, 3)).min() > 5
    assert not torch.equal(s.labels[:10], s.labels[:10].sort().values)


def test_every_class_draws_a_distinct_mask():
    u, v = torch.meshgrid(torch.linspace(-1.2, 1.2, 48), torch.linspace(-1.2, 1.2, 48), indexing="ij")
    masks = [m(u, v) for m in shapes.MASKS]
    for i, m in enumerate(masks):
        assert 0.1 < m.float().mean() < 0.8, shapes.CLASSES[i]
        for j in range(i):
            assert (m ^ masks[j]).float().mean() > 0.03, (shapes.CLASSES[i], shapes.CLASSES[j])


def test_default_splits_and_memory_cache():
    s = load_dataset("shapes")
    assert (len(s.train), len(s.val), len(s.test)) == (10_000, 2_000, 2_000)
    assert s.val.counts(10) == [200] * 10 and s.classes[0] == "circle"
    again = load_dataset("shapes", seed=1)
    assert torch.equal(s.test.images, again.test.images)  # the data is fixed; the seed only picks val
    assert not torch.equal(s.val.images, again.val.images)
    again.test.images.zero_()  # callers get copies: the cached tensors stay intact
    assert load_dataset("shapes").test.images.float().mean() > 10


def test_disk_cache(tmp_path):
    classes, train, test = shapes.load_shapes(n_train=100, n_test=50, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("shapes-v*-100-50-0.npz"))) == 1
    _, train2, test2 = shapes.load_shapes(n_train=100, n_test=50, cache_dir=tmp_path)
    assert torch.equal(train.images, train2.images) and torch.equal(test.labels, test2.labels)
