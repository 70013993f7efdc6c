"""CheXtriev test fixtures: one small synthetic ImaGenome twin, prepared once per session."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def twin(tmp_path_factory):
    from shared.data.synthetic import generate

    return generate("imagenome", tmp_path_factory.mktemp("cx_twin") / "imagenome", n=200, size=96, seed=3)


@pytest.fixture(scope="session")
def prepared_dir(twin, tmp_path_factory):
    from chextriev.prepare import prepare

    return prepare(twin, twin, tmp_path_factory.mktemp("cx_prep") / "prepared", workers=2)
