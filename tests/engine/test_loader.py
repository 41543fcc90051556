import torch

from cifarbench.engine.loader import PAD, PROG_RES_STEP, DeviceLoader, prog_res_schedule


def _data(n=40, c=3, h=8):
    images = torch.arange(n * c * h * h, dtype=torch.int64).remainder(251).to(torch.uint8).view(n, c, h, h)
    return images, torch.arange(n) % 5


def _loader(train=True, **kw):
    images, labels = _data()
    args = dict(batch_size=8, train=train, device="cpu", mean=(0.5,) * 3, std=(0.25,) * 3)
    args.update(kw)
    return DeviceLoader(images, labels, **args)


def test_batches_are_normalised_float_and_train_drops_last():
    loader = _loader(batch_size=16)
    batches = list(loader)
    assert len(batches) == len(loader) == 2  # 40 // 16, the partial batch is dropped
    x, y = batches[0]
    assert x.dtype == torch.float32 and x.shape == (16, 3, 8, 8) and y.dtype == torch.int64


def test_eval_walks_every_image_once_in_order():
    loader = _loader(train=False, batch_size=16)
    ys = torch.cat([y for _, y in loader])
    assert torch.equal(ys, torch.arange(40) % 5)
    x0, _ = next(iter(loader))
    images, _ = _data()
    expected = (images[:16].float() / 255 - 0.5) / 0.25
    assert torch.allclose(x0, expected, atol=1e-5)


def test_same_seed_and_epoch_same_batches_other_epoch_differs():
    a, b = _loader(seed=3), _loader(seed=3)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    b.set_epoch(1)
    assert not torch.equal(next(iter(a))[1], next(iter(b))[1])


def test_crop_and_flip_move_pixels_but_keep_content():
    images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    images[:, :, 3, 3] = 200  # one bright pixel per image
    loader = DeviceLoader(images, torch.zeros(4, dtype=torch.int64), 4, True, "cpu", (0.0,), (1 / 255,), seed=0)
    x, _ = next(iter(loader))
    bright = (x > 100).flatten(1).sum(1)
    assert bright.max() <= 1  # shifted by at most PAD, so it may fall out of the crop, never duplicated
    none = DeviceLoader(images, torch.zeros(4, dtype=torch.int64), 4, True, "cpu", (0.0,), (1 / 255,), augment="none")
    assert (next(iter(none))[0] > 100).flatten(1).sum(1).tolist() == [1, 1, 1, 1]
    assert PAD == 4


def test_crop_pad_bounds_the_shift_and_zero_pad_is_flip_only():
    images = torch.zeros(64, 1, 9, 9, dtype=torch.uint8)
    images[:, :, 4, 4] = 200  # the centre pixel: any shift within the padding keeps it in the crop
    labels = torch.zeros(64, dtype=torch.int64)

    def shifts(pad):
        loader = DeviceLoader(images, labels, 64, True, "cpu", (0.0,), (1 / 255,), seed=0, crop_pad=pad)
        x, _ = next(iter(loader))
        pos = (x[:, 0] > 100).flatten(1).float().argmax(1)
        return ((pos // 9 - 4).abs().max().item(), (pos % 9 - 4).abs().max().item())

    assert shifts(2) == (2, 2) and shifts(4) == (4, 4)  # 64 draws reach the padding's edge, never beyond
    flip_only = DeviceLoader(images, labels, 64, True, "cpu", (0.0,), (1 / 255,), seed=0, augment="flip")
    zero_pad = DeviceLoader(images, labels, 64, True, "cpu", (0.0,), (1 / 255,), seed=0, crop_pad=0)
    assert shifts(0) == (0, 0) and torch.equal(next(iter(zero_pad))[0], next(iter(flip_only))[0])


def test_start_step_replays_the_rest_of_the_epoch():
    full = list(_loader(seed=1))
    rest = list(_loader(seed=1).iterate(start_step=2))
    assert len(rest) == len(full) - 2
    for (xa, ya), (xb, yb) in zip(full[2:], rest):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_stop_step_ends_the_pass_early_on_the_whole_passs_draws():
    # a fractional epoch's last pass: its first k batches, drawn from the same plan as the whole pass
    full = list(_loader(seed=1))
    head = list(_loader(seed=1).iterate(0, stop_step=3))
    mid = list(_loader(seed=1).iterate(start_step=1, stop_step=3))  # resumed inside it
    assert len(full) > 3 and len(head) == 3 and len(mid) == 2
    for (xa, ya), (xb, yb) in zip(full[:3], head):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(full[1:3], mid))
    assert len(list(_loader(seed=1).iterate(0, stop_step=10**6))) == len(full)  # past the end: the whole pass


def test_ranks_shard_each_global_batch_exactly():
    single = list(_loader(batch_size=8, seed=2))
    ranks = [list(_loader(batch_size=4, seed=2, rank=r, world_size=2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(single)
    for i, (x, y) in enumerate(single):
        assert torch.equal(torch.cat([ranks[0][i][0], ranks[1][i][0]]), x)
        assert torch.equal(torch.cat([ranks[0][i][1], ranks[1][i][1]]), y)


def test_resolution_resizes_on_device_and_channels_last():
    x, _ = next(iter(_loader(resolution=16, channels_last=True)))
    assert x.shape == (8, 3, 16, 16)
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_cutout_paints_one_clipped_square_of_the_mean_colour_per_image():
    images = torch.full((64, 3, 8, 8), 200, dtype=torch.uint8)
    mean = (0.2, 0.4, 0.6)
    loader = DeviceLoader(images, torch.zeros(64, dtype=torch.int64), 64, True, "cpu", mean, (1.0,) * 3,
                          augment="none", cutout=4, seed=0)
    x, _ = next(iter(loader))
    painted = torch.isclose(x, torch.zeros(()), atol=1e-3)  # the mean colour normalises to 0
    assert torch.equal(painted[:, 0], painted[:, 1]) and torch.equal(painted[:, 0], painted[:, 2])  # all channels
    per_image = painted[:, 0].flatten(1).sum(1)
    assert per_image.min() >= 1 and per_image.max() == 16  # clipped at the border, never bigger than 4x4
    for m in painted[:, 0]:  # one axis-aligned rectangle: its bounding box is full
        rows, cols = m.any(1).nonzero().flatten(), m.any(0).nonzero().flatten()
        assert m.sum() == len(rows) * len(cols) and rows.diff().eq(1).all() and cols.diff().eq(1).all()
    assert (x[~painted] > 0).all()  # everything else untouched


def test_cutout_off_keeps_the_random_stream_of_runs_without_it():
    a, b = _loader(seed=5), _loader(seed=5, cutout=0)
    for (xa, _), (xb, _) in zip(a, b):
        assert torch.equal(xa, xb)
    c = _loader(seed=5, cutout=3)  # on: the same crops and flips, plus the squares
    (xa, ya), (xc, yc) = next(iter(a)), next(iter(c))
    assert torch.equal(ya, yc) and not torch.equal(xa, xc)
    assert ((xa != xc).flatten(1).sum(1) <= 3 * 3 * 3).all()


def test_prog_res_grows_linearly_in_steps_from_start_to_full_at_the_end_fraction():
    at = prog_res_schedule(16, 32, 0.5, epochs=2, steps=10)  # 20 steps: full size from step 10 on
    sizes = [at(e, s) for e in range(2) for s in range(10)]
    # 16 + 16 x (step / 20) / 0.5, rounded down to a multiple of PROG_RES_STEP
    assert sizes == [16, 16, 16, 20, 20, 24, 24, 24, 28, 28] + [32] * 10
    assert PROG_RES_STEP == 4
    # a start that is not a multiple of the step is kept, never undercut by the rounding
    odd = prog_res_schedule(10, 28, 1.0, epochs=1, steps=4)
    assert [odd(0, s) for s in range(4)] == [10, 12, 16, 20]


def test_loader_trains_each_step_at_its_scheduled_size_evaluates_at_full_and_resumes_mid_epoch():
    at = prog_res_schedule(4, 8, 0.5, epochs=1, steps=5)  # 40 images, batch 8: 5 steps
    loader = _loader(res_schedule=at, channels_last=True)
    xs = [x for x, _ in loader]
    assert [x.shape[-1] for x in xs] == [4, 4, 4, 8, 8]
    assert xs[0].shape == (8, 3, 4, 4) and xs[0].is_contiguous(memory_format=torch.channels_last)
    # the full-size steps are exactly the batches of a loader without the schedule
    plain = [x for x, _ in _loader(channels_last=True)]
    assert all(torch.equal(a, b) for a, b in zip(xs[3:], plain[3:]))
    # a resumed epoch replays the same sizes (and the same images) from its step
    tail = [x for x, _ in loader.iterate(2)]
    assert [x.shape[-1] for x in tail] == [4, 8, 8] and all(torch.equal(a, b) for a, b in zip(tail, xs[2:]))
    # evaluation ignores the schedule: always the run's resolution
    x, _ = next(iter(_loader(train=False, res_schedule=at)))
    assert x.shape[-1] == 8


def _mirrored(loader, epoch):
    """{image index: mirrored?} for one epoch: each image's bright pixel sits in the left half unless mirrored."""
    loader.set_epoch(epoch)
    x, y = next(iter(loader))
    return dict(zip(y.tolist(), (x[:, 0, :, 5:] > 100).flatten(1).any(1).tolist())), x, y


def test_alternate_flip_mirrors_each_image_in_every_other_epoch_and_keeps_the_other_draws():
    n = 64
    images = torch.zeros(n, 1, 10, 10, dtype=torch.uint8)
    images[:, :, 4, 2] = 200  # any crop shift of <= 2 px keeps it in the image's left half (its right if mirrored)
    labels = torch.arange(n)  # the label names the image
    kw = dict(batch_size=n, train=True, device="cpu", mean=(0.0,), std=(1 / 255,), seed=5, crop_pad=2)
    alt, rnd = DeviceLoader(images, labels, flip="alternate", **kw), DeviceLoader(images, labels, **kw)
    first, x0, y0 = _mirrored(alt, 0)
    assert 0 < sum(first.values()) < n
    assert _mirrored(rnd, 0)[0] == first and torch.equal(_mirrored(rnd, 0)[1], x0)  # epoch 0: random's draws
    for epoch in (1, 2, 3):
        seen, x, y = _mirrored(alt, epoch)
        assert seen == {i: m != bool(epoch % 2) for i, m in first.items()}  # inverted in odd epochs
        # the permutation and the crops are random's, only the mirroring differs
        other, xr, yr = _mirrored(rnd, epoch)
        assert torch.equal(y, yr)
        differs = torch.tensor([seen[i] != other[i] for i in y.tolist()]).view(-1, 1, 1, 1)
        assert torch.equal(x, torch.where(differs, xr.flip(3), xr))
    random_next = _mirrored(rnd, 1)[0]
    assert sum(random_next[i] != first[i] for i in first) < n  # random: no inversion
