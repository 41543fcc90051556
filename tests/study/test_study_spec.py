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


def test_a_budget_fallback_changes_only_the_finals_it_is_asked_for(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('name = "x"\ndataset = "shapes"\n[defaults]\nstem = "cifar"\n[sweep]\nepochs = 2\n[final]\nepochs = 5\n'
                    '[[models]]\nname = "resnet18"\nfinal = { stem = "cifar-s2" }\n'
                    'budget_fallback = { stem = "imagenet", below_epochs = 2 }\ngrid = [{ name = "a", lr = 0.2 }]\n')
    spec = load_spec(path)
    m = spec.models[0]
    assert m.budget_fallback == {"stem": "imagenet"} and m.fallback_below == 2
    assert spec.run_config(m, "final", {"lr": 0.2}).stem == "cifar-s2"  # the file's config, unless asked
    cfg = spec.run_config(m, "final", {"lr": 0.2}, fallback=True)  # over the model's own stage table
    assert (cfg.stem, cfg.lr, cfg.epochs) == ("imagenet", 0.2, 5)
    assert spec.run_config(m, "sweep", {}, fallback=True).stem == "imagenet" and spec.run_config(m, "sweep", {}).stem == "cifar"
    quick = load_spec("quick")
    assert quick.model("resnet18").budget_fallback == {"stem": "imagenet", "epochs": 4, "label_smoothing": 0.1}
    # the fallback's own epochs are its cap (budget.py), the file's cifar-s2 finals keep theirs
    assert quick.run_config("resnet18", "final", {}, fallback=True).epochs == 4
    assert quick.run_config("resnet18", "final", {}).epochs == 3
    # ResNet18's cifar-s2 recipe smooths labels by 0.2 (sweep and finals alike), its fallback keeps the measured 0.1
    assert [quick.run_config("resnet18", st, {}).label_smoothing for st in ("sweep", "final")] == [0.2, 0.2]
    assert quick.run_config("resnet18", "final", {}, fallback=True).label_smoothing == 0.1
    assert quick.run_config("mobilenet_v2_x0_5", "final", {}).label_smoothing == 0.1


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
    ('name = "x"\ndataset = "shapes"\n[sweep]\nepochs = 1\n[final]\nepochs = 1\n[[models]]\nname = "resnet18"\n'
     'budget_fallback = { stem = "imagenet" }\ngrid = [{ name = "a" }]\n',
     ["models[resnet18].budget_fallback.below_epochs", "None must be a positive integer"]),
    ('name = "x"\ndataset = "shapes"\n[sweep]\nepochs = 1\n[final]\nepochs = 1\n[[models]]\nname = "resnet18"\n'
     'budget_fallback = { below_epochs = 2 }\ngrid = [{ name = "a" }]\n', ["models[resnet18].budget_fallback", "names no"]),
    ('name = "x"\ndataset = "shapes"\n[sweep]\nepochs = 1\n[final]\nepochs = 1\n[[models]]\nname = "resnet18"\n'
     'budget_fallback = { stemm = "imagenet", below_epochs = 2 }\ngrid = [{ name = "a" }]\n',
     ["models[resnet18].budget_fallback", "stemm"]),
    ('name = "x"\ndataset = "shapes"\n[sweep]\nepochs = 1\n[final]\nepochs = 1\n[[models]]\nname = "resnet18"\n'
     'budget_fallback = { stem = "tiny", below_epochs = 2 }\ngrid = [{ name = "a" }]\n',
     ["models[resnet18].grid[a]", "tiny", "in the final stage with its budget_fallback"]),
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


# ---------------------------------------------------------------- [override]: a scaled or otherwise changed run of a study
def test_epochs_scale_and_cap_every_stage():
    from cifarbench.study import parse_spec

    paper = load_spec("paper")
    scaled = paper.with_override({"epochs_scale": 0.05})
    for m in scaled.models:
        for p in m.grid:
            params = {k: v for k, v in p.items() if k != "name"}
            assert (scaled.run_config(m, "sweep", params).epochs, scaled.run_config(m, "final", params).epochs) == (2, 3)
    assert scaled.deviations() == ["epochs scaled by 0.05: sweep 30 -> 2, final 50 -> 3"]
    assert scaled.stage_epochs()["resnet18"] == {"sweep": [30, 2], "final": [50, 3]}
    assert parse_spec(scaled.raw, source="worker").run_config("resnet18", "final").epochs == 3  # travels with the spec
    assert paper.with_override({"epochs_scale": 0.001}).run_config("resnet18", "sweep").epochs == 1  # at least 1
    capped = paper.with_override({"epochs_scale": 0.05, "max_epochs": 1})
    assert capped.deviations() == ["epochs scaled by 0.05 and capped at 1: sweep 30 -> 1, final 50 -> 1"]
    assert paper.with_override({}) is paper and "override" not in paper.raw  # no flag: the study is unchanged
    # per-model stage epochs (the quick preset's finals) are listed per group of models
    quick = load_spec("quick").with_override({"max_epochs": 4})
    assert quick.deviations() == ["epochs capped at 4: sweep 1 -> 1, final 3 -> 3 (resnet18), 6 -> 4 "
                                  "(mobilenet_v2_x0_5), 8 -> 4 (shufflenet_v2_x0_5)"]


def test_override_dataset_and_fields_are_deviations():
    from cifarbench.study.spec import override_flags, parse_override_args

    o = parse_override_args(["resolution=16", "train-subset=100", "amp=false", "opt=adam"])
    assert o == {"resolution": 16, "train_subset": 100, "amp": False, "opt": "adam"}
    spec = load_spec("paper").with_override({"dataset": "shapes", **o})
    assert spec.dataset == "shapes" and spec.run_config("resnet18", "final").dataset == "shapes"
    cfg = spec.run_config("resnet18", "sweep", {"opt": "sgd", "lr": 1e-3})
    assert (cfg.resolution, cfg.train_subset, cfg.opt) == (16, 100, "adam")  # over the grid point too
    assert spec.deviations() == ["dataset cifar10 -> shapes", 'opt = "adam" in every run (the study file: "adam" / '
                                 '"momentum" / "sgd")', "resolution = 16 in every run (the study file: 224)",
                                 "train_subset = 100 in every run (the study file: none)"]
    assert override_flags({"epochs_scale": 0.05, "resolution": 16}) == "--epochs-scale 0.05 --override resolution=16"
    with pytest.raises(CifarbenchError, match="--override 'resolution': expected KEY=VALUE"):
        parse_override_args(["resolution"])


def test_warmup_keeps_its_share_of_a_scaled_run(study_toml):
    spec = load_spec(study_toml(text="""
        name = "w"
        dataset = "shapes"
        [defaults]
        warmup_epochs = 5
        sched = "cosine"
        [sweep]
        epochs = 10
        [final]
        epochs = 20
        [[models]]
        name = "resnet18"
        grid = [{ name = "a", lr = 0.1 }]
    """)).with_override({"epochs_scale": 0.1})
    cfg = spec.run_config("resnet18", "sweep")
    assert (cfg.epochs, cfg.warmup_epochs) == (1, 0.5)
    cfg.validate()  # warm-up below epochs, as validate wants


@pytest.mark.parametrize("override, msg", [
    ({"epochs_scale": 0}, r"\[override\] epochs_scale: 0 must be a positive number \(--epochs-scale\)"),
    ({"epochs_scale": "half"}, r"epochs_scale: 'half' must be a positive number"),
    ({"max_epochs": 0}, r"\[override\] max_epochs: 0 must be a positive integer \(--max-epochs\)"),
    ({"seed": 3}, r"\[override\]: key 'seed' is set by the study itself"),
    ({"resolution": 2}, r"--resolution 2: must be at least 8 pixels"),
    ({"colour": 1}, r"\[override\]: unknown key 'colour'"),
])
def test_bad_override_is_one_line_naming_the_key(override, msg):
    with pytest.raises(CifarbenchError, match=msg) as e:
        load_spec("paper").with_override(override)
    assert "\n" not in str(e.value)
