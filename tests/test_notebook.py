"""The notebooks are stored without outputs (scripts/test.sh runs them with `pytest --nbmake notebooks/`)."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_is_the_tutorial_notebook():
    assert "tutorial.ipynb" in [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    dirty = [i for i, c in enumerate(cells) if c["outputs"] or c["execution_count"] is not None]
    assert not dirty, (f"{path.name}: code cells {dirty} hold outputs; strip them before committing "
                       f"(jupyter nbconvert --clear-output --inplace {path.name}, or nbstripout)")
