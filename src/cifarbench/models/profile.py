"""Parameters, MACs and activation memory of a model, in total and per layer.

MACs are multiply-accumulates counted by ``torch.utils.flop_counter.FlopCounterMode``
(which counts 2 FLOPs per multiply-add in convs, linears, matmuls and attention) divided
by 2. That is the unit of torchvision's "GFLOPS" column: resnet18 at 224 px counts 1.814.
Element-wise work (BN, activations, pooling, residual adds) is not counted, as there.

Activation memory, two figures per batch:
- ``forward_activation_bytes``: the sum of the outputs of every leaf module in one forward
  pass (torchinfo's convention). It is the traffic, an upper bound on what inference holds at
  once, since PyTorch frees an activation when no later layer needs it.
- ``backward_activation_bytes``: measured, not estimated from shapes: the bytes of the distinct
  tensors autograd saves for backward in one forward pass with gradients (found with
  ``torch.autograd.graph.saved_tensors_hooks``, deduplicated by storage, parameters and buffers
  left out, the input batch included). That is what a training step holds when backward
  starts; the peak during backward adds parameter gradients and one layer's temporaries. The
  pass runs in eval mode so that batch 1 works with BatchNorm; train mode saves the same
  tensors plus dropout masks (1 byte per element) and BatchNorm's per-channel statistics.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cifarbench.errors import CifarbenchError

MAC_CONVENTION = "multiply-accumulates (torchvision's 'GFLOPS' column counts these)"


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    """Eval mode inside; every module's own train/eval flag restored after (not just the root's)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def _zeros(model: nn.Module, input_size) -> torch.Tensor:
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    return torch.zeros(tuple(input_size), device=device, dtype=dtype)


def count_macs(model: nn.Module, input_size=(1, 3, 32, 32)) -> int:
    """Forward multiply-accumulates for the whole ``input_size`` batch (eval mode, no grad).

    A forward that fails on a zero input of the right shape means the model cannot take that
    size (a ViT at 32 px, AlexNet below 63 px): that is raised as a CifarbenchError.
    """
    x = _zeros(model, input_size)
    try:
        with _eval_mode(model), torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    except (RuntimeError, AssertionError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CifarbenchError(f"{type(model).__name__} cannot take input {list(x.shape)}: {msg}") from e
    return counter.get_total_flops() // 2


def _shape(out) -> list[int] | None:
    """The shape of a module's output, or of the first tensor in a tuple/list/dict output."""
    if isinstance(out, torch.Tensor):
        return list(out.shape)
    items = out.values() if isinstance(out, dict) else out if isinstance(out, (tuple, list)) else ()
    return next((s for s in map(_shape, items) if s is not None), None)


def _nbytes(out) -> int:
    if isinstance(out, torch.Tensor):
        return out.numel() * out.element_size()
    items = out.values() if isinstance(out, dict) else out if isinstance(out, (tuple, list)) else ()
    return sum(map(_nbytes, items))


def _saved_for_backward_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves during one forward with grad (see module doc)."""
    skip = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    seen: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in skip:
            seen[s.data_ptr()] = s.nbytes()
        return t

    with _eval_mode(model), torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = model(x)  # held until counted, so no saved storage is freed and its address reused
    del y
    return sum(seen.values())


def _layer_table(model: nn.Module, x: torch.Tensor) -> tuple[list[dict], int, int]:
    """One eval forward: (rows in call order, total MACs for the batch, leaf output bytes).

    A row is any module that is a leaf or owns parameters or MACs outside its children (e.g.
    attention matmuls written functionally), so the rows' params and MACs add up to the totals.
    """
    names = {m: n for n, m in model.named_modules()}
    order: list[nn.Module] = []
    shapes: dict[nn.Module, list[int] | None] = {}
    out_bytes = [0]

    def pre(m, _inp):
        if m not in shapes:
            order.append(m)
            shapes[m] = None

    def post(m, _inp, out):
        if shapes[m] is None:
            shapes[m] = _shape(out)
        if not any(True for _ in m.children()):
            out_bytes[0] += _nbytes(out)

    handles = [h for m in names for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))]
    try:
        with _eval_mode(model), torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        for h in handles:
            h.remove()
    # FlopCounterMode keys are "<RootClass>.<qualified name>" and count a module with its children
    root = type(model).__name__
    counts = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    inclusive = {m: counts.get(f"{root}.{n}" if n else root, 0) for m, n in names.items()}
    total = counter.get_total_flops()
    inclusive[model] = total  # work done directly in the root's forward lands in "Global" only
    batch = x.shape[0]
    rows = []
    uncalled = [m for m in names if m not in shapes]
    for m in order + uncalled:
        own_macs = inclusive[m] - sum(inclusive[c] for c in m.children())
        own_params = sum(p.numel() for p in m.parameters(recurse=False))
        if any(True for _ in m.children()) and not own_macs and not own_params:
            continue
        rows.append({"name": names[m] or type(m).__name__, "type": type(m).__name__,
                     "output_shape": shapes.get(m), "params": own_params, "macs": own_macs // 2 // batch})
    return rows, total // 2, out_bytes[0]


def summarize(name: str, input_size: int = 32, stem: str = "imagenet", num_classes: int = 10,
              in_chans: int = 3, batch_size: int = 1) -> dict:
    """Build ``name`` and profile it on a ``batch_size`` x ``in_chans`` x ``input_size``² input."""
    from cifarbench.models.registry import check_input_size, create_model

    if batch_size < 1:
        raise CifarbenchError(f"batch_size={batch_size}: must be at least 1")
    check_input_size(name, input_size, stem)  # before the build: a ViT costs seconds to build
    model = create_model(name, num_classes=num_classes, in_chans=in_chans, stem=stem)
    x = _zeros(model, (batch_size, in_chans, input_size, input_size))
    try:
        layers, macs, fwd_bytes = _layer_table(model, x)
        bwd_bytes = _saved_for_backward_bytes(model, x)
    except RuntimeError as e:  # a size the network cannot shrink that far, not covered by the table
        raise CifarbenchError(f"{name} (stem {stem!r}) fails on {input_size}x{input_size} inputs: "
                              f"{str(e).splitlines()[0]}") from None
    per_image = macs // batch_size
    return {
        "model": name,
        "stem": stem,
        "input": [batch_size, in_chans, input_size, input_size],
        "params": count_params(model),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "macs": per_image,
        "gmacs": per_image / 1e9,
        "mac_convention": MAC_CONVENTION,
        "forward_activation_bytes": fwd_bytes,
        "backward_activation_bytes": bwd_bytes,
        "layers": layers,
    }


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""  # unreachable


def format_summary(summary: dict) -> str:
    """A human-readable table: per-layer rows, then the totals with their conventions."""
    s = summary
    head = ("layer", "type", "output shape", "params", "MACs")
    body = [(r["name"], r["type"], "x".join(map(str, r["output_shape"] or [])) or "-",
             f"{r['params']:,}", f"{r['macs']:,}") for r in s["layers"]]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]

    def line(cells):
        return "  ".join(c.rjust(w) if i >= 3 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    b, c, h, w = s["input"]
    out = [f"{s['model']}  stem={s['stem']}  input={b}x{c}x{h}x{w}", "", line(head), line(["-" * w for w in widths])]
    out += [line(r) for r in body]
    out += [
        "",
        f"params:            {s['params']:,} ({s['trainable_params']:,} trainable)",
        f"MACs per image:    {s['macs']:,} ({s['gmacs']:.3f} G {s['mac_convention']})",
        f"forward activations (batch {b}):  {_human_bytes(s['forward_activation_bytes'])}"
        " (sum of layer outputs)",
        f"saved for backward (batch {b}):   {_human_bytes(s['backward_activation_bytes'])}"
        " (measured tensors autograd keeps for backward)",
    ]
    return "\n".join(out)
