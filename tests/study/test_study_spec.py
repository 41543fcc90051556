"""Parsing and validating study TOML files, and the presets."""
import pytest

from cifarbench.errors import CifarbenchError
from cifarbench.study import load_spec, preset_names


def _error(path) -> str:
    with pytest.raises(CifarbenchError) as e:
        load_spec(path)
    msg = str(e.value)
    assert "\n" not in msg
    assert str(path) in msg  # names the file
    return msg


def test_presets_parse():
    assert preset_names() == ["modern", "paper", "quick"]
    for name in preset_names():
        spec = load_spec(name)
        assert [m.name for m in spec.models] == ["resnet18", "mobilenet_v2_x0_5", "shufflenet_v2_x0_5"]
        assert spec.notes, f"{name}: the preset explains its choices"


def test_paper_is_the_study():
    spec = load_spec("paper")
    grids = {m.name: [(p["opt"], p["lr"], p.get("momentum")) for p in m.grid] for m in spec.models}
    assert grids == {
        "resnet18": [("sgd", 1e-3, None), ("momentum", 1e-4, 0.9), ("adam", 1e-6, None)],
        "mobilenet_v2_x0_5": [("sgd", 1e-3, None), ("momentum", 1e-4, 0.9), ("adam", 1e-6, None)],
        "shufflenet_v2_x0_5": [("sgd", 1e-2, None), ("momentum", 1e-3, 0.5), ("adam", 1e-4, None)],
    }
    assert spec.seeds == [0] and spec.target == "gpu"
    assert [m.paper_test_acc for m in spec.models] == [71.27, 66.91, 68.21]
    m = spec.models[0]
    sweep = spec.run_config(m, "sweep", {"opt": "sgd", "lr": 1e-3})
    final = spec.run_config(m, "final", {"opt": "sgd", "lr": 1e-3}, seed=0)
    for cfg in (sweep, final):
        assert (cfg.stem, cfg.resolution, cfg.sched, cfg.weight_decay, cfg.label_smoothing, cfg.batch_size,
                cfg.augment, cfg.momentum) == ("imagenet", 224, "plateau", 1e-6, 0.0, 64, "none", 0.0)
        assert cfg.eval_test is False and cfg.resume == "auto"
    assert (sweep.epochs, final.epochs) == (30, 50)


def test_stage_settings_win_over_grid(study_toml):
    spec = load_spec(study_toml())
    cfg = spec.run_config("resnet18", "sweep", {"opt": "adam", "lr": 0.5, "epochs": 99}, output="x")
    assert (cfg.opt, cfg.lr, cfg.epochs, cfg.batch_size, cfg.output) == ("adam", 0.5, 3, 32, "x")


def test_a_model_can_override_its_stages_and_the_study_sets_jobs(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('name = "x"\ndataset = "shapes"\njobs = 2\n[sweep]\nepochs = 2\n[final]\nepochs = 5\n'
                    '[[models]]\nname = "resnet18"\nfinal = { epochs = 3 }\ngrid = [{ name = "a", epochs = 9 }]\n'
                    '[[models]]\nname = "shufflenet_v2_x0_5"\ngrid = [{ name = "a" }]\n')
    spec = load_spec(path)
    assert spec.jobs == 2
    assert spec.run_config("resnet18", "final", {"epochs": 9}).epochs == 3
    assert spec.run_config("resnet18", "sweep", {"epochs": 9}).epochs == 2
    assert spec.run_config("shufflenet_v2_x0_5", "final", {}).epochs == 5


@pytest.mark.parametrize("text, words", [
    ('name = "x"\ndataset = "shapes"\nbogus = 1\n[sweep]\nepochs = 1\n[final]\nepochs = 1\n', ["bogus"]),
    ('name = "x"\ndataset = "shapes"\n[sweep]\nepochs = 1\n[final]\nepochs = 1\n', ["models"]),
    ('name = "x"\ndataset = "shapes"\n[sweep]\nepochs = 1\n[final]\nepochs = 1\n'
     '[[models]]\nname = "resnet18"\ngrid = [{ name = "a", lrr = 0.1 }]\n', ["models[resnet18].grid[0]", "lrr"]),
    ('name = "x"\ndataset = "shapes"\n[sweep]\nepochs = 1\n[final]\nepochs = 1\n'
     '[[models]]\nname = "resnet18"\ngrid = [{ name = "a", lr = -1.0 }]\n', ["models[resnet18].grid[a]", "--lr -1.0"]),
    ('name = "x"\ndataset = "shapes"\n[sweep]\nepochs = 1\n[final]\nepochs = 1\n'
     '[[models]]\nname = "resnet18"\ngrid = [{ name = "a", lr = "fast" }]\n', ["models[resnet18].grid[a]"]),
    ('name = "x"\ndataset = "shapes"\n[defaults]\neval_test = true\n[sweep]\nepochs = 1\n[final]\nepochs = 1\n'
     '[[models]]\nname = "resnet18"\ngrid = [{ name = "a" }]\n', ["[defaults]", "eval_test", "set by the study"]),
    ('name = "x"\ndataset = "shapes"\n[sweep]\nepochs = 1\n[final]\nepochs = 1\n'
     '[[models]]\nname = "resnet18"\ngrid = [{ name = "a" }, { name = "a" }]\n', ["used twice"]),
    ('name = "x"\ndataset = "shapes"\n[sweep]\nepochs = 1\nsampler = "tpe"\nn_trials = 2\n[final]\nepochs = 1\n'
     '[[models]]\nname = "resnet18"\n', ["space"]),
    ('name = "x"\ndataset = "shapes"\n[sweep]\nepochs = 1\npruner = "sometimes"\n[final]\nepochs = 1\n'
     '[[models]]\nname = "resnet18"\ngrid = [{ name = "a" }]\n', ["pruner", "sometimes"]),
    ('name = "x"\ndataset = "shapes"\n[sweep]\nepochs = 1\n[final]\nepochs = 1\n'
     '[[models]]\nname = "resnet18"\nspeed = 3\ngrid = [{ name = "a" }]\n', ["models[0]", "speed"]),
    ('name = "x"\ndataset = "shapes"\n[sweep]\n[final]\nepochs = 1\n'
     '[[models]]\nname = "resnet18"\ngrid = [{ name = "a" }]\n', ["[sweep]", "epochs"]),
    ('name = "x"\ndataset = "shapes"\njobs = 0\n[sweep]\nepochs = 1\n[final]\nepochs = 1\n'
     '[[models]]\nname = "resnet18"\ngrid = [{ name = "a" }]\n', ["jobs", "positive integer"]),
    ('name = "x"\ndataset = "shapes"\n[sweep]\nepochs = 1\n[final]\nepochs = 1\n'
     '[[models]]\nname = "resnet18"\nfinal = { epochz = 2 }\ngrid = [{ name = "a" }]\n', ["models[resnet18].final", "epochz"]),
])
def test_bad_study_files(tmp_path, text, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    msg = _error(path)
    for w in words:
        assert w in msg, msg


def test_unknown_preset_or_file(tmp_path):
    with pytest.raises(CifarbenchError, match="no such study file or preset"):
        load_spec("fastest")
    with pytest.raises(CifarbenchError, match="no such config file"):
        load_spec(tmp_path / "missing.toml")


def test_search_space_is_validated(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('name = "x"\ndataset = "shapes"\n[sweep]\nepochs = 1\nsampler = "tpe"\nn_trials = 2\n'
                    '[final]\nepochs = 1\n[[models]]\nname = "resnet18"\n'
                    'space = { lr = { low = 0.0, high = 1.0, log = true } }\n')
    assert "log needs low > 0" in _error(path)
    path.write_text(path.read_text().replace("low = 0.0", "low = 1e-3"))
    spec = load_spec(path)
    assert spec.sampler == "tpe" and spec.models[0].space["lr"]["high"] == 1.0
