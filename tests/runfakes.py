"""Run folders for the predict and export tests: a hand-written one (no training) and a trained one."""
from __future__ import annotations

import copy

import torch

from cifarbench.config import TrainConfig, write_json
from cifarbench.engine import checkpoint
from cifarbench.engine.trainer import build_model

CLASSES = [f"c{i}" for i in range(10)]
# deliberately not the shapes dataset's statistics: a test fails if predict or export recompute them
MEAN, STD = [0.1, 0.5, 0.9], [0.2, 0.3, 0.4]


def coloured_images(n, channels=3, size=32, seed=0):
    """uint8 n×size×size×channels: a random colour per image plus pixel noise (differs from image to image)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(20, 236, (n, 1, 1, channels), generator=g)
    noise = torch.randint(-20, 21, (n, size, size, channels), generator=g)
    return (base + noise).clamp(0, 255).to(torch.uint8).numpy()


def fake_run(path, channels=3, image_size=32, resolution=None, ema=False, dataset="shapes", seed=0):
    """A run folder as the trainer leaves it, holding a randomly initialised shufflenet_v2_x0_5.

    A fresh model gives nearly the same, nearly uniform probabilities for every image, which would
    let a wrong preprocessing pass unseen; so the classifier is set to standardise its features over
    images like ``coloured_images`` and to project them randomly: classes and probabilities then
    spread out and follow the input. With ``ema`` the checkpoint holds a second, different classifier
    under ``model_ema``. Returns the model whose weights predict must use.
    """
    cfg = TrainConfig(model="shufflenet_v2_x0_5", stem="cifar", dataset=dataset, resolution=resolution,
                      output=str(path))
    torch.manual_seed(seed)
    model = build_model(cfg, len(CLASSES), channels).eval()
    x = torch.from_numpy(coloured_images(64, channels, resolution or image_size, seed=seed + 1)).permute(0, 3, 1, 2)
    x = (x / 255 - torch.tensor(MEAN[:channels]).view(1, -1, 1, 1)) / torch.tensor(STD[:channels]).view(1, -1, 1, 1)
    feats = []
    hook = model.fc.register_forward_hook(lambda m, inputs, out: feats.append(inputs[0]))
    with torch.no_grad():
        model(x)
        hook.remove()
        mu, sd = feats[0].mean(0), feats[0].std(0) + 1e-6

        def classifier(fc):
            w = torch.randn_like(fc.weight) / sd * 2 / fc.weight.shape[1] ** 0.5
            fc.weight.copy_(w)
            fc.bias.copy_(-w @ mu)

        classifier(model.fc)
        ckpt = {"model": copy.deepcopy(model.state_dict())}
        if ema:
            classifier(model.fc)
            ckpt["model_ema"] = model.state_dict()
    path.mkdir(parents=True, exist_ok=True)
    checkpoint.save_atomic(ckpt, path / "best.pt")
    write_json(path / "config.json", cfg.to_dict())
    write_json(path / "results.json", {
        "status": "finished", "model": cfg.model, "dataset": dataset, "classes": CLASSES,
        "preprocess": {"channels": channels, "image_size": image_size, "resolution": resolution or image_size,
                       "mean": MEAN[:channels], "std": STD[:channels]}})
    return model


_trained = {}


def trained_run(tmp_path_factory):
    """shufflenet_v2_x0_5 (cifar stem) trained one epoch on 512 shapes images: trained once per session."""
    if "run" not in _trained:
        from cifarbench.engine import train

        base = tmp_path_factory.mktemp("trained")
        cfg = TrainConfig(model="shufflenet_v2_x0_5", stem="cifar", dataset="shapes", data_dir=str(base / "data"),
                          train_subset=512, val_size=128, batch_size=64, epochs=1, threads=1,
                          output=str(base / "run"))
        train(cfg)
        _trained["run"] = base / "run"
    return _trained["run"]
