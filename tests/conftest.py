"""Shared fixtures: small generated data only; no test reads a real dataset."""
import os

# Two cores on CI: every test process, and every process a test starts, runs one intra-op thread unless the
# test says otherwise. Set, not setdefault, and before torch is imported: a caller's OMP_NUM_THREADS must not
# change the suite's summation order (results) or oversubscribe the cores.
os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

# CI (.ci/run) sets CIFARBENCH_REQUIRE=browser,postgres: a test with one of these marks that would skip (its
# system part missing) fails instead, so a green CI means the browser and PostgreSQL tests ran. Elsewhere
# they skip, saying why (pytest -ra prints the reasons).
REQUIRED = {m.strip() for m in os.environ.get("CIFARBENCH_REQUIRE", "").split(",") if m.strip()}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    needed = REQUIRED & {m.name for m in item.iter_markers()}
    if rep.skipped and needed and not hasattr(rep, "wasxfail"):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = f"CIFARBENCH_REQUIRE={','.join(sorted(REQUIRED))}: this {'/'.join(sorted(needed))} test must run, but: {reason}"


@pytest.fixture
def tiny_splits():
    """A 4-class, 12×12 RGB dataset whose class is the colour of a square: learnable in one epoch."""
    from cifarbench.data import ImageSet, Splits

    def make(n, seed):
        g = torch.Generator().manual_seed(seed)
        labels = torch.arange(n) % 4
        images = torch.randint(0, 60, (n, 3, 12, 12), generator=g, dtype=torch.uint8)
        colours = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=torch.uint8)
        images[:, :, 3:9, 3:9] = colours[labels].view(n, 3, 1, 1)
        return ImageSet(images, labels)

    return Splits("tiny", ["red", "green", "blue", "yellow"], make(256, 1), make(64, 2), make(64, 3))
