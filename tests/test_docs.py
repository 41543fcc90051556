"""The docs stay true: the README's stem table is the one the code documents and tests."""
from pathlib import Path

from cifarbench.models.stems import stem_docs

ROOT = Path(__file__).resolve().parents[1]


def test_readme_stem_table_matches_the_code():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- stems: generated from cifarbench.models.stems.stem_docs() -->")[1].split("<!-- /stems -->")[0]
    assert block.strip() == stem_docs().strip(), "regenerate the README's stem table from stem_docs()"
