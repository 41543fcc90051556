"""`cifarbench models`, `summary` and `select`."""
import json

from cifarbench.cli import main


def test_models_lists_and_filters(capsys):
    assert main(["models", "mobilenet_v2_x*"]) == 0
    assert capsys.readouterr().out.split() == ["mobilenet_v2_x0_35", "mobilenet_v2_x0_5", "mobilenet_v2_x0_75",
                                               "mobilenet_v2_x1_0", "mobilenet_v2_x1_4"]
    assert main(["models", "nope*"]) == 2
    assert "error: no model matches 'nope*'" in capsys.readouterr().err


def test_models_stems_prints_the_table(capsys):
    assert main(["models", "--stems"]) == 0
    out = capsys.readouterr().out
    assert "| ResNet |" in out and "`cifar-s2`" in out


def test_summary_json(capsys):
    assert main(["summary", "resnet18", "--stem", "cifar", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["input"] == [1, 3, 32, 32] and s["params"] == 11_173_962 and s["layers"][0]["name"] == "conv1"


def test_summary_table(capsys):
    assert main(["summary", "shufflenet_v2_x0_5", "--input", "64", "-b", "2"]) == 0
    out = capsys.readouterr().out
    assert "input=2x3x64x64" in out and "MACs per image" in out and "conv5.0" in out


def test_summary_errors(capsys):
    assert main(["summary", "resnet81"]) == 2
    assert "error: unknown model 'resnet81'; closest: resnet18" in capsys.readouterr().err
    assert main(["summary", "vgg11", "--stem", "cifar"]) == 2
    assert "use --stem imagenet" in capsys.readouterr().err


def test_select_formats(capsys):
    assert main(["select", "--top", "2", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows] == ["shufflenet_v2_x0_5", "mobilenet_v3_small"]
    assert main(["select", "--family", "resnet", "--max-gflops", "2", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("rank,model,acc1,gflops") and lines[1].startswith("1,resnet18,69.758,1.814")
    assert main(["select", "--min-acc", "99"]) == 2
    assert "passes these filters" in capsys.readouterr().err
