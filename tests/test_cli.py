"""The CLI is thin: these check the flag plumbing, TOML defaults and the one-line error contract."""
import json

import pytest

from cifarbench.cli import build_parser, main, train_config_from_args


def _cfg(argv):
    return train_config_from_args(build_parser().parse_args(["train", *argv]))


def test_flags_follow_timm_names_and_override_toml(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('model = "resnet18"\nlr = 0.3\nbatch-size = 128\nsched = "cosine"\n')
    cfg = _cfg(["-c", str(toml), "--lr", "0.1", "--opt", "adam", "--weight-decay", "1e-6", "--amp",
                "--resume", "--seed", "4", "--device", "cpu", "--output", "x"])
    assert (cfg.model, cfg.lr, cfg.batch_size, cfg.sched, cfg.opt) == ("resnet18", 0.1, 128, "cosine", "adam")
    assert cfg.weight_decay == 1e-6 and cfg.amp and cfg.resume == "auto" and cfg.seed == 4 and cfg.output == "x"


def test_model_kwargs_parse_like_timm_and_merge_over_the_toml_table(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('model = "mobilenet_v2_x0_5"\n[model_kwargs]\ndropout = 0.1\nnorm_layer = "x"\n')
    assert _cfg(["-c", str(toml)]).model_kwargs == {"dropout": 0.1, "norm_layer": "x"}
    cfg = _cfg(["-c", str(toml), "--model-kwargs", "dropout=0.0", "zero_init_residual=true"])
    assert cfg.model_kwargs == {"dropout": 0.0, "norm_layer": "x", "zero_init_residual": True}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--model-kwargs", "dropout"])


def test_unknown_toml_key_is_one_line_error(tmp_path, capsys):
    toml = tmp_path / "run.toml"
    toml.write_text("learning_rate = 0.1\n")
    assert main(["train", "-c", str(toml)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {toml}: unknown option(s) learning_rate"


def test_bad_toml_and_missing_config(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("lr = = 1\n")
    assert main(["train", "-c", str(bad)]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert main(["train", "-c", str(tmp_path / "none.toml")]) == 2
    assert "no such config file" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--resolution", "4"], "--resolution 4: must be at least 8 pixels"),
    (["--sched", "linear"], "--sched 'linear'"),
    (["--momentum", "1.5"], "--momentum 1.5"),
])
def test_impossible_flags_exit_2_with_one_line(argv, message, capsys):
    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_train_and_eval_commands_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CIFARBENCH_DATA", str(tmp_path / "data"))
    out = tmp_path / "run"
    argv = ["train", "--model", "shufflenet_v2_x0_5", "--dataset", "shapes", "--train-subset", "256",
            "--val-size", "128", "--resolution", "16", "-b", "64", "--epochs", "1", "--threads", "1",
            "--output", str(out)]
    assert main(argv) == 0
    assert main(argv + ["--resume", "auto"]) == 0
    assert "nothing to do" in capsys.readouterr().err
    assert main(["eval", str(out), "--split", "val", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["split"] == "val" and res["n"] == 128


def test_compile_takes_an_optional_mode(capsys):
    assert _cfg(["--compile"]).compile is True
    assert _cfg(["--compile", "reduce-overhead"]).compile == "reduce-overhead"
    assert _cfg([]).compile is False
    assert main(["train", "--compile", "fastest"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: --compile 'fastest': choose one of default, reduce-overhead")
    assert main(["-q", "bench", "--models", "resnet18", "--compile", "fastest", "--device", "cpu"]) == 2
    assert "--compile 'fastest'" in capsys.readouterr().err
