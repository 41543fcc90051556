import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cifarbench.engine import cpu_conv
from cifarbench.engine.cpu_conv import MatmulConv, MatmulConv2d, use_matmul_convs


@pytest.mark.parametrize("k,stride,pad", [(3, 1, 1), (3, 2, 1), (1, 2, 0), (1, 1, 0), (3, 1, 0)])
@pytest.mark.parametrize("fold", [True, False])
def test_matmul_conv_is_conv2d_forward_and_both_gradients(k, stride, pad, fold):
    # float64: the matmul formulation must be the same function as conv2d, not just close in bf16
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 6, 6, dtype=torch.float64, generator=g).contiguous(memory_format=torch.channels_last)
    w = torch.randn(7, 5, k, k, dtype=torch.float64, generator=g)
    x1, w1 = x.clone().requires_grad_(), w.clone().requires_grad_()
    x2, w2 = x.clone().requires_grad_(), w.clone().requires_grad_()
    y1 = MatmulConv.apply(x1, w1, stride, pad, fold)
    y2 = F.conv2d(x2, w2, None, stride, pad)
    assert y1.shape == y2.shape
    torch.testing.assert_close(y1, y2, rtol=1e-12, atol=1e-12)
    grad = torch.randn(y2.shape, dtype=torch.float64, generator=g)
    gx1, gw1 = torch.autograd.grad(y1, (x1, w1), grad)
    gx2, gw2 = torch.autograd.grad(y2, (x2, w2), grad)
    torch.testing.assert_close(gx1, gx2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gw1, gw2, rtol=1e-12, atol=1e-12)


def _calls(monkeypatch):
    seen = []
    real = MatmulConv.apply
    monkeypatch.setattr(MatmulConv, "apply", lambda *a: seen.append((a[0].shape[-1], a[-1])) or real(*a))
    return seen


def test_only_small_maps_under_cpu_autocast_take_the_matmul_path(monkeypatch):
    conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
    keys = set(conv.state_dict())
    assert use_matmul_convs(conv) == 1 and type(conv) is MatmulConv2d
    assert set(conv.state_dict()) == keys  # the stock parameter names: checkpoints and exports are unchanged
    seen = _calls(monkeypatch)
    for side in (2, 4, 8, 16):
        x = torch.randn(2, 8, side, side)
        conv(x)                          # fp32: always conv2d
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(x)
        assert y.dtype == torch.bfloat16
    # output maps of 4, 16, 64 pixels go through the matmul; the input gradient by fold only up to 16
    assert seen == [(2, True), (4, True), (8, False)]


def test_bf16_output_and_gradients_match_onednn_within_bf16_rounding():
    torch.manual_seed(0)
    ref = nn.Conv2d(64, 64, 3, stride=2, padding=1, bias=False)
    mm = nn.Conv2d(64, 64, 3, stride=2, padding=1, bias=False)
    mm.load_state_dict(ref.state_dict())
    use_matmul_convs(mm)
    x = torch.randn(4, 64, 8, 8)
    outs = []
    for m in (ref, mm):
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = m(xi)
        y.float().square().sum().backward()
        outs.append((y.float(), xi.grad, m.weight.grad))
    for a, b in zip(*outs):
        assert a.dtype == b.dtype
        assert ((a - b).abs().max() / b.abs().max()).item() < 2e-2


def test_grouped_biased_and_strange_convs_are_left_alone():
    model = nn.Sequential(nn.Conv2d(8, 8, 3, groups=8, bias=False), nn.Conv2d(8, 8, 3, bias=True),
                          nn.Conv2d(8, 8, 3, dilation=2, bias=False), nn.Conv2d(8, 8, (1, 3), bias=False),
                          nn.Conv2d(8, 8, 3, padding="same", bias=False), nn.Conv2d(8, 8, 3, bias=False))
    assert use_matmul_convs(model) == 1
    assert [type(m) is MatmulConv2d for m in model] == [False] * 5 + [True]


def test_apply_only_on_the_cpu_with_native_bf16_and_each_isa_with_its_thresholds(monkeypatch):
    flags = {"amx": True, "bf16": True}
    monkeypatch.setattr("cifarbench.engine.env.cpu_has_amx", lambda: flags["amx"])
    monkeypatch.setattr("cifarbench.engine.env.cpu_has_avx512_bf16", lambda: flags["bf16"])
    monkeypatch.setattr("cifarbench.engine.env.cpu_avx2_only", lambda: False)
    cpu = torch.device("cpu")
    conv = nn.Conv2d(3, 4, 3, bias=False)
    assert cpu_conv.apply(conv, cpu, amp=True) == 1
    assert (conv.matmul_max_pixels, conv.fold_max_pixels) == (cpu_conv.MATMUL_MAX_PIXELS, cpu_conv.FOLD_MAX_PIXELS)
    assert cpu_conv.apply(nn.Conv2d(3, 4, 3, bias=False), cpu, amp=False) == 0
    assert cpu_conv.apply(nn.Conv2d(3, 4, 3, bias=False), torch.device("meta"), amp=True) == 0
    flags["amx"] = False  # AVX-512 BF16 only (AMD EPYC): the 2x2 maps only
    conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
    assert cpu_conv.apply(conv, cpu, amp=True) == 1
    assert cpu_conv.thresholds(cpu, True) == (cpu_conv.AVX512_MAX_PIXELS,) * 2 == (4, 4)
    seen = _calls(monkeypatch)
    for side in (2, 4):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            conv(torch.randn(2, 8, side, side))
    assert seen == [(2, True)]
    flags["bf16"] = False  # no x86 bf16: nothing routed, even where cpu_has_bf16 (ARM) lets amp run
    monkeypatch.setattr("cifarbench.engine.env.cpu_has_bf16", lambda: True)
    assert cpu_conv.apply(nn.Conv2d(3, 4, 3, bias=False), cpu, amp=True) == 0
    assert cpu_conv.thresholds(cpu, True) is None


def test_fp32_runs_route_the_2x2_maps_on_avx2_only_cpus_and_nowhere_else(monkeypatch):
    avx2_only = {"v": True}
    monkeypatch.setattr("cifarbench.engine.env.cpu_avx2_only", lambda: avx2_only["v"])
    monkeypatch.setattr("cifarbench.engine.env.cpu_has_amx", lambda: False)
    monkeypatch.setattr("cifarbench.engine.env.cpu_has_avx512_bf16", lambda: False)
    cpu = torch.device("cpu")
    assert cpu_conv.thresholds(cpu, False) == (cpu_conv.AVX2_FP32_MAX_PIXELS,) * 2 == (4, 4)
    conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
    assert cpu_conv.apply(conv, cpu, amp=False) == 1 and conv.fp32
    seen = _calls(monkeypatch)
    for side in (2, 4):
        conv(torch.randn(2, 8, side, side))  # fp32 and no autocast: the 2x2 map only
    conv.double()(torch.randn(2, 8, 2, 2, dtype=torch.float64))  # other dtypes keep conv2d
    assert seen == [(2, True)]
    plain = nn.Conv2d(8, 8, 3, padding=1, bias=False)
    use_matmul_convs(plain, 4, 4)  # routed for bf16 autocast only (the default): fp32 calls stay conv2d
    seen.clear()
    plain(torch.randn(2, 8, 2, 2))
    assert seen == [] and not plain.fp32
    avx2_only["v"] = False  # fp32 on AVX-512 CPUs was not measured: nothing routed
    assert cpu_conv.thresholds(cpu, False) is None
    assert cpu_conv.apply(nn.Conv2d(3, 4, 3, bias=False), cpu, amp=False) == 0


def test_fp32_output_and_gradients_match_onednn_to_fp32_rounding():
    torch.manual_seed(0)
    ref = nn.Conv2d(64, 32, 3, stride=2, padding=1, bias=False)
    mm = nn.Conv2d(64, 32, 3, stride=2, padding=1, bias=False)
    mm.load_state_dict(ref.state_dict())
    use_matmul_convs(mm, 4, 4, fp32=True)
    x = torch.randn(4, 64, 4, 4).contiguous(memory_format=torch.channels_last)  # a 2x2 output map
    outs = []
    for m in (ref, mm):
        xi = x.clone().requires_grad_()
        y = m(xi)
        y.square().sum().backward()
        outs.append((y, xi.grad, m.weight.grad))
    for a, b in zip(*outs):
        assert a.dtype == b.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
