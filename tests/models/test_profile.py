"""MACs, params, activation memory and the per-layer table."""
import json

import pytest
import torch

from cifarbench.errors import CifarbenchError
from cifarbench.models import create_model
from cifarbench.models.profile import count_macs, count_params, format_summary, summarize


def test_resnet18_at_224_matches_torchvision_and_the_study():
    model = create_model("resnet18", num_classes=10)
    assert count_params(model) == 11_181_642  # the study's model summary
    assert count_macs(model, (1, 3, 224, 224)) / 1e9 == pytest.approx(1.814, rel=0.005)  # torchvision's "GFLOPS"


@pytest.mark.parametrize("stem,gmacs", [("imagenet", 0.0370), ("cifar-s2", 0.1402), ("cifar", 0.5554)])
def test_resnet18_macs_per_stem_at_32px(stem, gmacs):
    # the figures in the stems.py table; cifar matches the usual "0.56 GMACs" of CIFAR ResNet18
    assert count_macs(create_model("resnet18", stem=stem)) / 1e9 == pytest.approx(gmacs, rel=0.005)


def test_count_macs_counts_the_whole_batch_and_restores_modes():
    model = create_model("shufflenet_v2_x0_5").train()
    model.conv1.eval()  # a mixed state must come back as it was
    one = count_macs(model, (1, 3, 32, 32))
    assert count_macs(model, (3, 3, 32, 32)) == 3 * one
    assert model.training and not model.conv1.training and model.stage2.training


def test_summary_keys_and_totals():
    s = summarize("resnet18", input_size=32, stem="cifar")
    assert set(s) >= {"model", "stem", "input", "params", "trainable_params", "macs", "gmacs", "mac_convention",
                      "forward_activation_bytes", "backward_activation_bytes", "layers"}
    assert s["input"] == [1, 3, 32, 32] and s["params"] == s["trainable_params"] == 11_173_962
    assert s["gmacs"] == pytest.approx(0.5554, rel=0.005) and "multiply-accumulates" in s["mac_convention"]
    # the rows add up to the totals
    assert sum(r["params"] for r in s["layers"]) == s["params"]
    assert sum(r["macs"] for r in s["layers"]) == s["macs"]
    conv1 = next(r for r in s["layers"] if r["name"] == "conv1")
    assert conv1 == {"name": "conv1", "type": "Conv2d", "output_shape": [1, 64, 32, 32], "params": 1728,
                     "macs": 1728 * 32 * 32}
    json.dumps(s)  # the CLI prints it as JSON


def test_functional_attention_macs_are_attributed():
    # swin computes qkv with F.linear inside its attention module: the table must still add up
    s = summarize("swin_t", input_size=32)
    assert sum(r["macs"] for r in s["layers"]) == s["macs"] > 0
    assert sum(r["params"] for r in s["layers"]) == s["params"]


def test_activation_memory_scales_with_batch():
    one = summarize("mobilenet_v2_x0_5", stem="cifar", batch_size=1)
    two = summarize("mobilenet_v2_x0_5", stem="cifar", batch_size=2)
    assert two["macs"] == one["macs"]  # per image
    assert two["forward_activation_bytes"] == 2 * one["forward_activation_bytes"]
    assert 1.95 < two["backward_activation_bytes"] / one["backward_activation_bytes"] <= 2.0
    # saved for backward: at least every conv input, at most a few copies of all activations
    assert 0.3 < one["backward_activation_bytes"] / one["forward_activation_bytes"] < 3


def test_summary_rejects_sizes_the_model_cannot_take():
    with pytest.raises(CifarbenchError, match="only accepts 224x224"):
        summarize("vit_b_32", input_size=32)
    with pytest.raises(CifarbenchError, match="batch_size"):
        summarize("resnet18", batch_size=0)
    # count_macs is a model's first forward in a run: a size it cannot take is a clear error there too
    with pytest.raises(CifarbenchError, match=r"AlexNet cannot take input \[1, 3, 32, 32\]"):
        count_macs(create_model("alexnet"))


def test_format_summary():
    text = format_summary(summarize("shufflenet_v2_x0_5", stem="cifar"))
    assert "conv1.0" in text and "stage2.0.branch1.0" in text
    assert "352,042" in text and "multiply-accumulates" in text and "saved for backward" in text
