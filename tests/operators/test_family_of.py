"""A model's family is resolved from its card: the installed family of its name, from the distribution
the card records; anything else is FamilyUnavailableError saying what is missing."""

import pytest

from pdeserve.operators.card import FamilySource
from pdeserve.operators.errors import FamilyUnavailableError
from pdeserve.operators.family import family_of
from pdeserve.operators.repository import ModelRepository


@pytest.fixture(scope="module")
def darcy_card(bundled_repo):
    return ModelRepository(bundled_repo).card("darcy-fno")[1]


def test_the_family_comes_from_the_distribution_the_card_records(darcy_card):
    assert family_of(darcy_card).origin.distribution == "pdeserve"
    assert family_of(darcy_card.replace(family=None)).name == "darcy"  # cards written before origins
    other = darcy_card.replace(family=FamilySource("pdeserve-darcy-fork", "2.0"))
    with pytest.raises(FamilyUnavailableError, match="comes from 'pdeserve-darcy-fork', but 'pdeserve'"):
        family_of(other)


def test_a_missing_or_data_only_family_says_what_is_missing(darcy_card):
    missing = darcy_card.replace(pde="heat", family=FamilySource("pdeserve-heat", "0.3"))
    with pytest.raises(
        FamilyUnavailableError, match=r"'pdeserve-heat' \(version 0.3\), which is not installed"
    ):
        family_of(missing)
    imported = darcy_card.replace(family=FamilySource(None, None, "the-well"))
    with pytest.raises(
        FamilyUnavailableError, match=r"imported data \(the-well\) and has no classical solver"
    ):
        family_of(imported)
