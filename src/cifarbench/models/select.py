"""The study's first step: rank torchvision's ImageNet models by top-1 accuracy per GFLOPS.

Everything is read offline from torchvision's weight enums (the same numbers as the table on
torchvision's "Models and pre-trained weights" page): ``meta["_metrics"]["ImageNet-1K"]["acc@1"]``,
``meta["_ops"]`` (GFLOPS, which are multiply-accumulates at the weights' crop size) and
``meta["num_params"]`` (1000 classes).

Which row when a model has several weights (IMAGENET1K_V1, V2, SWAG...): its ``DEFAULT``
weights, torchvision's recommended ones, named in the ``weights`` column. That is the best
recipe trained on ImageNet-1K alone: V2 where it exists (a newer training recipe, same
architecture and GFLOPS); the SWAG weights of vit_b_16, vit_l_16 and regnet_y_16gf/32gf,
pretrained on Instagram images, are not DEFAULT. Two models have only SWAG weights and keep
them: vit_h_14 (518 px) and regnet_y_128gf (384 px). GFLOPS are counted at each weight's crop
size: 224 px for most; 240 to 600 px for EfficientNets, 299 for inception_v3, 256 for swin_v2_*. Only
classification models with ImageNet-1K weights are ranked; cifarbench's own variants
(``mobilenet_v2_x0_5``, ...) have no weights and so no row.
"""
from __future__ import annotations

import fnmatch

from cifarbench import log
from cifarbench.errors import CifarbenchError


def imagenet_table() -> list[dict]:
    """One row per torchvision classification model: its DEFAULT ImageNet-1K weights' meta."""
    import torchvision
    from torchvision.models import get_model_weights

    rows = []
    for name in torchvision.models.list_models(module=torchvision.models):
        weights = get_model_weights(name).DEFAULT
        meta = weights.meta
        acc1 = meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1")
        if acc1 is None or not meta.get("_ops"):
            continue
        crop = getattr(weights.transforms, "keywords", {}).get("crop_size")  # the size acc@1 and GFLOPS are at
        rows.append({"model": name, "weights": weights.name, "crop_px": crop, "acc1": float(acc1),
                     "gflops": float(meta["_ops"]), "params_m": meta["num_params"] / 1e6})
    return rows


def rank_models(max_gflops: float | None = None, min_acc: float | None = None, family: str | None = None,
                measure: int | None = None, top: int | None = None) -> list[dict]:
    """Rows sorted by acc@1 / GFLOPS, best first, filtered; ``measure=PX`` also builds each model
    (10 classes, imagenet stem) and adds its MACs and params at PX x PX."""
    if top is not None and top < 1:
        raise CifarbenchError(f"top={top}: must be at least 1")
    if measure is not None and measure < 1:
        raise CifarbenchError(f"measure={measure}: must be a positive input size in pixels")
    rows = imagenet_table()
    if family:  # a name prefix (resnet), or an fnmatch pattern (*net_b?)
        pattern = family if any(c in family for c in "*?[") else family + "*"
        rows = [r for r in rows if fnmatch.fnmatchcase(r["model"], pattern)]
    if max_gflops is not None:
        rows = [r for r in rows if r["gflops"] <= max_gflops]
    if min_acc is not None:
        rows = [r for r in rows if r["acc1"] >= min_acc]
    for r in rows:
        r["acc_per_gflop"] = r["acc1"] / r["gflops"]
    rows.sort(key=lambda r: (-r["acc_per_gflop"], r["model"]))
    rows = rows[:top] if top else rows
    out = [{"rank": i, "model": r["model"], "acc1": r["acc1"], "gflops": r["gflops"], "params_m": r["params_m"],
            "acc_per_gflop": r["acc_per_gflop"], "weights": r["weights"], "crop_px": r["crop_px"]}
           for i, r in enumerate(rows, 1)]
    if measure is not None:
        _measure(out, measure)
    return out


def _measure(rows: list[dict], px: int) -> None:
    from cifarbench.models.profile import count_macs, count_params
    from cifarbench.models.registry import check_input_size, create_model

    progress = log.Progress(len(rows), desc=f"measuring at {px} px")
    for r in rows:
        model = create_model(r["model"], num_classes=10)
        r["params_at_10_classes"] = count_params(model)
        try:
            check_input_size(r["model"], px)
            r["macs_at_px"] = count_macs(model, (1, 3, px, px))
        except CifarbenchError as e:  # e.g. ViTs only take 224 px: say so, keep the row
            log.info(f"{r['model']}: no MACs at {px} px ({e})")
            r["macs_at_px"] = None
        del model
        progress.update(1, model=r["model"])
    progress.close()
