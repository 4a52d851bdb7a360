"""Model cards name their training data portably: by content and by a path relative to the model
repository, never by an absolute path of the machine that trained them."""

import json
import re
from pathlib import Path, PurePosixPath

from pdeserve.operators.lineage import dataset_path, recorded_path

MODELS = Path(__file__).resolve().parents[2] / "models"
# An absolute POSIX path or a Windows drive path inside a string.
ABSOLUTE = re.compile(r"(^|[\s\"'=:])(/[A-Za-z0-9_.-]+/|[A-Za-z]:[\\/])")


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def test_no_file_under_models_holds_an_absolute_path():
    cards = sorted(MODELS.glob("*/*/*.json"))
    assert len(cards) >= 8  # every version's config.json (and a legacy version's metrics.json)
    for card in cards:
        offending = [s for s in _strings(json.loads(card.read_text())) if ABSOLUTE.search(s)]
        assert offending == [], f"{card.relative_to(MODELS)}: {offending}"


def test_a_lineage_path_is_relative_to_the_repository_wherever_the_data_lie(tmp_path):
    repo, data = tmp_path / "models", tmp_path / "data" / "darcy.h5"
    outside = recorded_path(data, repo)
    assert outside == "../data/darcy.h5" and not PurePosixPath(outside).is_absolute()
    assert recorded_path(repo / ".data" / "m" / "x.h5", repo) == ".data/m/x.h5"

    class Record:
        path = outside

    assert dataset_path(Record, repo).resolve() == data.resolve()
