"""Fixtures for the report tests; the fake study itself is built by fakestudy.py."""
import pytest

from fakestudy import make_fake_study


@pytest.fixture(scope="session")
def rendered_study(tmp_path_factory):
    """The fake study, rendered once for every test that only reads the report."""
    from cifarbench.report import render_report

    study = make_fake_study(tmp_path_factory.mktemp("report"))
    paths = render_report(study)
    return study, paths
