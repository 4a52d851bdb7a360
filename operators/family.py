"""A model's PDE family, resolved from its card: the one place that says why a family is missing."""

from __future__ import annotations

from typing import Any

from pdeserve.datagen.families import PdeFamily, UnknownFamilyError, get_family, registry
from pdeserve.operators.card import ModelCard
from pdeserve.operators.errors import FamilyUnavailableError


def family_of(card: ModelCard) -> PdeFamily:
    """The installed family of ``card``'s PDE; ``FamilyUnavailableError`` saying what is missing (the
    plugin distribution to install, or that imported data have no solver)."""
    source = card.family
    if source is not None and not source.has_solver:
        raise FamilyUnavailableError(
            f"model {card.pde!r} was trained on imported data ({source.data_format}) and has no "
            "classical solver"
        )
    try:
        family = get_family(card.pde)
    except UnknownFamilyError:
        broken = [b for b in registry().broken if b.name == card.pde]
        if broken:  # the reason stays in `datagen list`: an import error names the plugin's files
            raise FamilyUnavailableError(
                f"the PDE family {card.pde!r} from {broken[0].origin.distribution} "
                f"{broken[0].origin.version} is installed here but failed to load"
            ) from None
        if source is None:
            raise FamilyUnavailableError(f"the PDE family {card.pde!r} is not installed here") from None
        raise FamilyUnavailableError(
            f"the PDE family {card.pde!r} comes from the Python distribution {source.distribution!r} "
            f"(version {source.version}), which is not installed here"
        ) from None
    if source is not None and family.origin is not None and source.distribution != family.origin.distribution:
        raise FamilyUnavailableError(
            f"the PDE family {card.pde!r} of this model comes from {source.distribution!r}, but "
            f"{family.origin.distribution!r} registers it here: its solver is not the model's"
        )
    return family


def family_and_parameters(card: ModelCard) -> tuple[PdeFamily, Any]:
    """``card``'s family (as :func:`family_of`) and its parameters as the card records them."""
    family = family_of(card)
    return family, family.parameters_from(card.pde_parameters)
