"""The study report: report.md, a self-contained report.html and figures/*.png, rebuilt from a study
folder's files alone (study.json, study.toml and the run folders). Never imports torch.

    from cifarbench.report import render_report
    render_report("studies/quick")   # -> [report.md, report.html, figures/...]
"""
from cifarbench.report.render import render_report

__all__ = ["render_report"]
