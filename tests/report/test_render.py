"""report.md and report.html from a fake study folder (see conftest.py): content, flags, self-containment."""
import json
import re
import subprocess
import sys
from html.parser import HTMLParser

import pytest

from cifarbench.cli import main
from cifarbench.errors import CifarbenchError
from cifarbench.report import render_report
from cifarbench.report.load import read_metrics

from fakestudy import CLASSES, MODELS, make_fake_study

LABELS = [v[0] for v in MODELS.values()]


class _Page(HTMLParser):
    """Collects img srcs, every href/src, and the rows of each table by id."""

    def __init__(self):
        super().__init__()
        self.imgs, self.refs, self.tables, self._stack = [], [], {}, []
        self._tid, self._in_tbody, self._row = None, False, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        elif tag == "table":
            self._tid = a.get("id")
            self.tables.setdefault(self._tid, [])
        elif tag == "tbody":
            self._in_tbody = True
        elif tag == "tr" and self._in_tbody:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._row.append("")

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_tbody = False
        elif tag == "tr" and self._row is not None:
            self.tables[self._tid].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._row is not None and self._row:
            self._row[-1] += data


def _parse(html_text):
    p = _Page()
    p.feed(html_text)
    return p


@pytest.fixture(scope="module")
def report(rendered_study):
    study, paths = rendered_study
    return study, paths, (study / "report.md").read_text(), (study / "report.html").read_text()


def test_writes_report_and_figures(report):
    study, paths, _, _ = report
    assert paths[0] == study / "report.md" and paths[1] == study / "report.html"
    names = {p.name for p in paths[2:]}
    assert {"tradeoff.png", "curves_final.png", "per_class.png"} <= names
    assert {f"curves_sweep_{m}.png" for m in MODELS} <= names
    assert {f"confusion_{m}.png" for m in MODELS} <= names
    for p in paths[2:]:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_final_table_has_one_row_per_model_with_mean_std_and_paper_numbers(report):
    _, _, md, html = report
    rows = _parse(html).tables["final-table"]
    assert [r[0] for r in rows] == LABELS
    by_label = {r[0]: r for r in rows}
    # ResNet18 seeds test at 90.1 and 90.5 (from the confusion matrices), paper 71.27.
    r = by_label["ResNet18"]
    assert "90.35 ± 0.35 (n=2)" in r[6] and r[9].strip() == "71.27" and r[10].strip() == "+19.08"
    assert "11.2 M" in r[3] and "557 M" in r[4]
    for label in LABELS:
        assert re.search(rf"^\| {re.escape(label)} \|.*± .*\(n=2\)", md, re.M)


def test_sweep_tables_mark_winners_and_states(report):
    _, _, md, _ = report
    assert md.count("★ winner**") == 3
    assert "| **sgd-lr1e-1 ★ winner** | momentum | 0.1 | 0.9 | 6/6 |" in md
    assert "| adam-lr1e-3 | adam | 0.001 | — | 3/6 | 60.00 | pruned |" in md
    assert "failed (diverged)" in md


def test_flags(report):
    _, _, md, _ = report
    flags = md.split("## Flags")[1].split("## Learning curves")[0]
    overfit = flags.split("### Overfitting")[1].split("###")[0]
    assert "P = 3" in overfit
    assert "| mobilenet_v2_x0_5 | sweep | adam-lr1e-3 | 3 → 6 |" in overfit
    assert overfit.count("| sweep |") + overfit.count("| final |") == 1  # only the run built to overfit
    problems = flags.split("### Diverged")[1].split("###")[0]
    assert "| shufflenet_v2_x0_5 | sweep | sgd-lr1e-1 | diverged |" in problems
    assert "| resnet18 | sweep | adam-lr1e-3 | pruned |" in problems
    spread = flags.split("### Differences within")[1]
    assert re.search(r"\| ShuffleNetV2 x0.5 vs MobileNetV2 x0.5 \| test \|.*within seed spread", spread)
    assert re.search(r"\| ResNet18 vs MobileNetV2 x0.5 \| test \|.*\| significant \|", spread)


def test_summary_names_winners(report):
    _, _, md, _ = report
    summary = md.split("## Summary")[1].split("## ")[0]
    assert "**On accuracy**: ResNet18" in summary and ": significant" in summary
    assert "**On accuracy per MAC**: ShuffleNetV2 x0.5" in summary
    assert "**On time**: ShuffleNetV2 x0.5" in summary
    assert "ShuffleNetV2 x0.5 vs MobileNetV2 x0.5" in summary.split("Not distinguishable")[1]


def test_conventions_config_env_data_and_per_class(report):
    _, _, md, _ = report
    for needle in ("multiply-accumulates per image", "wall-clock seconds", "sample standard deviation",
                   'description = "A fake study written by the report tests."', "| torch | 2.14.1 |",
                   "| threads | 2 |", "| total | 45000 | 5000 | 10000 |",
                   "figures/data_distribution.png", "figures/data_samples.png", "summed over 2 seeds"):
        assert needle in md, needle
    per_class = md.split("## Per-class")[1].split("## Dataset")[0]
    assert all(f"| {c} |" in per_class for c in CLASSES)


def test_markdown_figures_exist(report):
    study, _, md, _ = report
    refs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(refs) >= 10
    for ref in refs:
        assert not ref.startswith(("/", "http")) and (study / ref).is_file(), ref


def test_html_is_self_contained(report):
    study, _, md, html = report
    page = _parse(html)
    assert len(page.imgs) == len(re.findall(r"!\[", md))
    assert all(src.startswith("data:image/png;base64,") for src in page.imgs)
    external = [r for r in page.refs if not r.startswith(("data:", "#"))]
    assert external == []
    assert not re.search(r"<link|<script|@import|url\(", html)


def test_partial_study_renders_without_torch(tmp_path):
    """A study with only its sweep done still gets a report with one final-table row per model.
    Rendered in a fresh interpreter to prove the report never imports torch."""
    study = make_fake_study(tmp_path, finals=False, data_figures=False)
    code = ("import sys; from cifarbench.report import render_report; render_report(sys.argv[1]); "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code, str(study)], check=True, timeout=120)
    html = (study / "report.html").read_text()
    rows = _parse(html).tables["final-table"]
    assert [r[0] for r in rows] == LABELS and all("—" in r[6] for r in rows)
    md = (study / "report.md").read_text()
    assert "No final run has finished yet" in md and "data_samples" not in md
    assert "| mobilenet_v2_x0_5 | sweep | adam-lr1e-3 | 3 → 6 |" in md


def test_bad_inputs_name_the_file(tmp_path):
    with pytest.raises(CifarbenchError, match="no such study folder"):
        render_report(tmp_path / "nope")
    with pytest.raises(CifarbenchError, match="study.json: not found"):
        render_report(tmp_path)
    study = make_fake_study(tmp_path, data_figures=False)
    metrics = study / "final" / "resnet18" / "seed0" / "metrics.csv"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join(lines[:2] + ["1,2"] + lines[2:]) + "\n")
    with pytest.raises(CifarbenchError, match=re.escape(str(metrics)) + ": line 3"):
        render_report(study)
    metrics.write_text("\n".join(lines + ["9,0.5"]) + "\n")  # a run writing its last line: skip that line
    assert read_metrics(metrics)["epoch"] == [float(e) for e in range(1, len(lines))]
    (study / "study.json").write_text("{not json")
    with pytest.raises(CifarbenchError, match="study.json: not valid JSON"):
        render_report(study)


def test_cli_report_and_overfit_patience(tmp_path, capsys):
    study = make_fake_study(tmp_path, finals=False, data_figures=False)
    assert main(["report", str(study), "--overfit-patience", "4"]) == 0
    assert f"wrote {study / 'report.html'}" in capsys.readouterr().out
    md = (study / "report.md").read_text()
    assert "P = 4" in md and "No run overfits by this rule." in md  # the overfit run rises for 3 epochs only
    assert main(["report", str(study), "--overfit-patience", "0"]) == 2
    assert "error: overfit patience 0" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "error:" in capsys.readouterr().err


def test_single_seed_differences_are_not_called_significant(tmp_path):
    """The paper preset runs one seed: no spread, so no verdict, and the report must say so."""
    study = make_fake_study(tmp_path, data_figures=False)
    info = json.loads((study / "study.json").read_text())
    del info["models"]["resnet18"]
    for m in info["models"].values():
        m["finals"], m["sweep"] = m["finals"][:1], []
    (study / "study.json").write_text(json.dumps(info))
    render_report(study)
    md = (study / "report.md").read_text()
    assert "With a single seed, no difference can be called significant" in md
    assert "cannot tell (fewer than 2 seeds)" in md
    rows = _parse((study / "report.html").read_text()).tables["final-table"]
    assert [r[0] for r in rows] == LABELS[1:]
    assert all(r[6].endswith("(n=1)") and "±" not in r[6] for r in rows)
