"""Fixtures for the study tests: a small study TOML and the fake engine's call log."""
import textwrap

import pytest

STUDY_TOML = """
name = "tiny"
dataset = "shapes"
description = "a study of fakes"
seeds = [0, 1]

[defaults]
batch_size = 32
stem = "cifar"

[sweep]
epochs = 3
{sweep_extra}

[final]
epochs = 2

[[models]]
name = "resnet18"
label = "ResNet18"
paper_test_acc = 71.27
grid = [
  {{ name = "sgd", opt = "sgd", lr = 0.1 }},
  {{ name = "mom", opt = "momentum", lr = 0.01, momentum = 0.9 }},
  {{ name = "adam", opt = "adam", lr = 0.001 }},
]

[[models]]
name = "shufflenet_v2_x0_5"
label = "ShuffleNetV2 x0.5"
grid = [
  {{ name = "sgd", opt = "sgd", lr = 0.1 }},
  {{ name = "adam", opt = "adam", lr = 0.1 }},
]
"""


@pytest.fixture
def study_toml(tmp_path):
    """Write the tiny study (optionally with extra [sweep] lines) and return its path."""
    def make(sweep_extra: str = "", name: str = "tiny.toml", text: str | None = None):
        path = tmp_path / name
        path.write_text(textwrap.dedent(text) if text is not None else STUDY_TOML.format(sweep_extra=sweep_extra))
        return path

    return make


@pytest.fixture
def fakelog(tmp_path, monkeypatch):
    """The fake engine's call log, for this test only (spawned workers inherit the variable)."""
    path = tmp_path / "calls.jsonl"
    monkeypatch.setenv("STUDYFAKES_LOG", str(path))
    monkeypatch.delenv("STUDYFAKES_SLEEP", raising=False)
    monkeypatch.delenv("STUDYFAKES_INTERRUPT", raising=False)
    return path
