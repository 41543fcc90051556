"""``shapes``: a generated 10-class, 32x32 RGB dataset for offline demos and tests.

Coloured geometric shapes with random position, size, rotation, aspect and colour on gradient,
striped or blotchy backgrounds with pixel noise. Colour and placement carry no class
information, so a linear model on raw pixels stays far below 60% (measured in
benchmarks/shapes_difficulty.py) while a small CNN learns it in well under a minute.

Rendering is vectorised: each shape is an inequality over rotated coordinate grids, evaluated
for a whole chunk of images at once at 2x resolution and average-pooled (anti-aliasing).
The data is fixed (seeded by ``DATA_SEED``), like a real dataset; ``load_dataset``'s seed
only picks the validation split. Images are generated in chunks of ``CHUNK`` with their own
seed, so the first N images of a split do not depend on how many are generated.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

from cifarbench.data.cache import load_npz, save_npz
from cifarbench.data.splits import ImageSet

CLASSES = ["circle", "square", "triangle", "star", "cross", "ring", "diamond", "hexagon", "heart", "arrow"]
SIZE = 32
SUPERSAMPLE = 2
CHUNK = 1000
N_TRAIN, N_TEST = 12_000, 2_000  # the validation split (default 2,000) is carved from train
DATA_SEED = 0
VERSION = 1  # bump when the rendering changes, so disk caches are not reused


# ------------------------------------------------------------------ shape masks
# Each takes local coordinates u, v (shape centred at 0, circumradius about 1) and returns
# a boolean "inside" mask of the same shape.
def _star(u, v, points: int, inner: float):
    """A star with ``points`` outer vertices at radius 1 and inner vertices at ``inner``.

    With ``inner = cos(pi / points)`` the inner vertices sit on the edges: a regular polygon.
    """
    half = math.pi / points
    rad = torch.sqrt(u * u + v * v)
    phi = torch.remainder(torch.atan2(v, u) + half, 2 * half) - half  # angle to the nearest outer vertex
    px, py = rad * torch.cos(phi), rad * torch.sin(phi).abs()
    ix, iy = inner * math.cos(half), inner * math.sin(half)
    # inside when p is on the origin's side of the edge from (1, 0) to the inner vertex
    return (ix - 1) * py - iy * (px - 1) >= 0


def _circle(u, v):
    return u * u + v * v <= 0.85 ** 2


def _square(u, v):
    return torch.maximum(u.abs(), v.abs()) <= 0.72


def _triangle(u, v):
    return _star(u, v, 3, math.cos(math.pi / 3))


def _five_star(u, v):
    return _star(u, v, 5, 0.42)


def _cross(u, v):
    a, b = u.abs(), v.abs()
    return ((a < 0.28) & (b < 0.95)) | ((b < 0.28) & (a < 0.95))


def _ring(u, v):
    r2 = u * u + v * v
    return (r2 >= 0.55 ** 2) & (r2 <= 0.95 ** 2)


def _diamond(u, v):
    return u.abs() / 0.95 + v.abs() / 0.55 <= 1


def _hexagon(u, v):
    return _star(u / 0.9, v / 0.9, 6, math.cos(math.pi / 6))


def _heart(u, v):
    x, y = u * 1.15, -v * 1.15 + 0.1
    return (x * x + y * y - 1) ** 3 - x * x * y ** 3 <= 0


def _arrow(u, v):
    shaft = (v.abs() < 0.2) & (u > -0.95) & (u < 0.1)
    head = (u >= 0.1) & (u <= 0.95) & (v.abs() <= 0.62 * (0.95 - u) / 0.85)
    return shaft | head


MASKS = [_circle, _square, _triangle, _five_star, _cross, _ring, _diamond, _hexagon, _heart, _arrow]
assert len(MASKS) == len(CLASSES)


# ------------------------------------------------------------------ rendering
@dataclass(frozen=True)
class Style:
    """The knobs of the difficulty (benchmarks/shapes_difficulty.py measures the defaults)."""

    radius: tuple[float, float] = (6.0, 13.0)  # circumradius in pixels
    aspect: tuple[float, float] = (0.85, 1.15)  # horizontal stretch before rotation
    noise: tuple[float, float] = (0.02, 0.08)  # std of the per-pixel Gaussian noise, per image
    bg_spread: float = 0.5  # how far the background's second colour may stray from its first
    min_contrast: float = 0.35  # shape vs background colour, max over channels


STYLE = Style()


def _backgrounds(n: int, g: torch.Generator) -> torch.Tensor:
    """[n, 1, S, S] mixing weights in [0, 1]: a gradient, stripes, smooth blotches or flat, per image."""
    s = SIZE
    y, x = torch.meshgrid(torch.linspace(-0.5, 0.5, s), torch.linspace(-0.5, 0.5, s), indexing="ij")
    angle = torch.rand(n, 1, 1, generator=g) * 2 * math.pi
    proj = x * torch.cos(angle) + y * torch.sin(angle)  # [n, S, S]
    gradient = proj + 0.5
    freq = 2 + 4 * torch.rand(n, 1, 1, generator=g)
    phase = torch.rand(n, 1, 1, generator=g) * 2 * math.pi
    stripes = 0.5 + 0.5 * torch.sin(2 * math.pi * freq * proj + phase)
    blotches = F.interpolate(torch.rand(n, 1, 4, 4, generator=g), size=(s, s), mode="bilinear",
                             align_corners=False)[:, 0]
    kind = torch.randint(0, 4, (n, 1, 1), generator=g)
    t = torch.where(kind == 0, gradient, torch.where(kind == 1, stripes, torch.where(kind == 2, blotches, 0.0)))
    return t.unsqueeze(1)


def _uniform(lo_hi, *shape, g):
    lo, hi = lo_hi
    return lo + (hi - lo) * torch.rand(*shape, generator=g)


def _render_chunk(seed: int, style: Style = STYLE) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk of CHUNK images (balanced classes), fully determined by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    n = CHUNK

    def rand(*shape):
        return torch.rand(*shape, generator=g)

    # Render in class-sorted order, so each class's mask works on a contiguous slice (a view,
    # no gather copies of the big grids); the images are shuffled at the end.
    labels = torch.arange(n) * len(CLASSES) // n
    radius = _uniform(style.radius, n, 1, 1, g=g)
    margin = 0.6 * radius
    cx = margin + (SIZE - 2 * margin) * rand(n, 1, 1)
    cy = margin + (SIZE - 2 * margin) * rand(n, 1, 1)
    theta = 2 * math.pi * rand(n, 1, 1)
    aspect = _uniform(style.aspect, n, 1, 1, g=g)
    cos, sin = torch.cos(theta) / radius, torch.sin(theta) / radius

    # Supersampled pixel-centre grid, in pixels of the final image.
    ss = SIZE * SUPERSAMPLE
    coords = (torch.arange(ss, dtype=torch.float32) + 0.5) / SUPERSAMPLE
    dy, dx = coords.view(1, ss, 1) - cy, coords.view(1, 1, ss) - cx  # [n, ss, 1], [n, 1, ss]
    bounds = torch.searchsorted(labels, torch.arange(len(CLASSES) + 1))
    alpha = torch.empty(n, 1, SIZE, SIZE)
    for c, mask in enumerate(MASKS):  # 10 vectorised evaluations, one per class
        sl = slice(int(bounds[c]), int(bounds[c + 1]))
        u = (cos[sl] * dx[sl] + sin[sl] * dy[sl]) / aspect[sl]
        v = cos[sl] * dy[sl] - sin[sl] * dx[sl]
        alpha[sl] = F.avg_pool2d(mask(u, v).unsqueeze(1).float(), SUPERSAMPLE)  # anti-aliased edges

    # Colours: the shape's is uniform; the background's two colours are kept away from it
    # (a shape the colour of its background would be unlearnable noise, not difficulty).
    fg = rand(n, 3, 1, 1)
    bg1 = rand(n, 3, 1, 1)
    too_close = (fg - bg1).abs().amax(dim=1, keepdim=True) < style.min_contrast
    bg1 = torch.where(too_close, torch.remainder(fg + 0.5, 1.0), bg1)
    bg2 = (bg1 + style.bg_spread * (rand(n, 3, 1, 1) - 0.5)).clamp(0, 1)
    background = bg1 + _backgrounds(n, g) * (bg2 - bg1)

    img = background * (1 - alpha) + fg * alpha
    img = img + _uniform(style.noise, n, 1, 1, 1, g=g) * torch.randn(n, 3, SIZE, SIZE, generator=g)
    images = img.clamp_(0, 1).mul_(255).round_().to(torch.uint8)
    order = torch.randperm(n, generator=g)
    return images[order], labels[order]


def generate(n: int, split: str = "train", seed: int = DATA_SEED, style: Style = STYLE) -> ImageSet:
    """``n`` images of ``split`` ("train" or "test"; disjoint seed streams)."""
    stream = {"train": 0, "test": 1}[split]
    chunks = [_render_chunk((seed * 2 + stream) * 1_000_003 + i, style) for i in range(math.ceil(n / CHUNK))]
    images = torch.cat([c[0] for c in chunks])[:n].contiguous()
    labels = torch.cat([c[1] for c in chunks])[:n].contiguous()
    return ImageSet(images, labels)


@contextmanager
def _one_thread():
    """Run torch on one thread: the ops here are too small (0.4M elements) for fork/join to pay,
    and on a busy machine two spinning threads made generation ten times slower (measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@lru_cache(maxsize=2)
def _generate_cached(n_train: int, n_test: int, seed: int, style: Style) -> tuple[ImageSet, ImageSet]:
    with _one_thread():
        return generate(n_train, "train", seed, style), generate(n_test, "test", seed, style)


def load_shapes(n_train: int = N_TRAIN, n_test: int = N_TEST, seed: int = DATA_SEED,
                cache_dir: Path | None = None) -> tuple[list[str], ImageSet, ImageSet]:
    """Classes, train and test of the shapes dataset; cached in memory, and on disk under ``cache_dir``."""
    cache = Path(cache_dir) / f"shapes-v{VERSION}-{n_train}-{n_test}-{seed}.npz" if cache_dir else None
    arrays = load_npz(cache, ("train_x", "train_y", "test_x", "test_y")) if cache else None
    if arrays is not None:
        train = ImageSet(torch.from_numpy(arrays["train_x"]), torch.from_numpy(arrays["train_y"]))
        test = ImageSet(torch.from_numpy(arrays["test_x"]), torch.from_numpy(arrays["test_y"]))
    else:
        train, test = _generate_cached(n_train, n_test, seed, STYLE)
        if cache is not None:
            save_npz(cache, train_x=train.images.numpy(), train_y=train.labels.numpy(),
                     test_x=test.images.numpy(), test_y=test.labels.numpy())
    # Copies: callers get tensors they may modify without corrupting the in-memory cache.
    return list(CLASSES), ImageSet(train.images.clone(), train.labels.clone()), \
        ImageSet(test.images.clone(), test.labels.clone())
