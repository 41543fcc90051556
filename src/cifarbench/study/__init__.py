"""Studies: a sweep per model on Optuna, selection on validation, finals over seeds, test, report."""
from cifarbench.study.spec import StudySpec, load_spec, parse_spec, preset_names
from cifarbench.study.study import mean_std, plan_study, run_study

__all__ = ["StudySpec", "load_spec", "parse_spec", "preset_names", "run_study", "plan_study", "mean_std"]
