"""The ledger's errors are measured against the family's reference solved more finely, so the
reference path's own error is recorded and no path promises an error the PDE's solution does not allow;
its costs are those of one-sample calls."""

import dataclasses

import pytest

from pdeserve.datagen.builtin_families import DARCY
from pdeserve.datagen.darcy import DarcyParameters
from pdeserve.datagen.navier_stokes import NavierStokesParameters
from pdeserve.operators.card import REFERENCE_PATH, RUNG_PATH, SURROGATE_PATH
from pdeserve.operators.validation import finer_reference, ledger_reference, measure_ledger


def test_the_finer_reference_halves_the_grid_spacing_and_the_time_step():
    darcy = finer_reference(DarcyParameters().for_resolution(33), 33, "nodes")
    assert darcy.solve_resolution == 65  # node grids nest by n - 1
    assert (
        finer_reference(DarcyParameters(solve_resolution=65).for_resolution(33), 33, "nodes").solve_resolution
        == 129
    )
    ns = NavierStokesParameters(time_step=0.001)
    finer = finer_reference(ns.for_resolution(32), 32, "periodic")
    assert (finer.solve_resolution, finer.time_step) == (64, 0.0005)  # periodic grids nest by n
    finer = finer_reference(ns.for_resolution(32), 32, "periodic", factor=4)
    assert (finer.solve_resolution, finer.time_step) == (128, 0.00025)
    # Darcy's first-order convergence: its ledgers use a reference eight times as fine.
    assert (
        finer_reference(
            DarcyParameters().for_resolution(64), 64, "nodes", DARCY.reference_refinement
        ).solve_resolution
        == 505
    )


def test_a_ledgers_reference_is_refined_by_the_familys_factor_within_a_grid_limit():
    from pdeserve.datagen.builtin_families import NAVIER_STOKES

    darcy = DarcyParameters()
    assert ledger_reference(DARCY, darcy.for_resolution(64), 64).solve_resolution == 505  # 8 x
    assert ledger_reference(DARCY, darcy.for_resolution(128), 128).solve_resolution == 509  # 4 x
    assert ledger_reference(DARCY, darcy.for_resolution(512), 512).solve_resolution == 1023  # 2 x at least
    finer = ledger_reference(NAVIER_STOKES, NavierStokesParameters(time_step=0.001).for_resolution(64), 64)
    assert (finer.solve_resolution, finer.time_step) == (128, 0.0005)
    for refinement in (1, True, 2.5, 0):
        with pytest.raises(ValueError, match="reference_refinement must be an integer of at least 2"):
            dataclasses.replace(DARCY, reference_refinement=refinement)


def test_a_family_whose_parameters_name_no_grid_or_step_has_no_finer_reference():
    @dataclasses.dataclass(frozen=True)
    class Plain:
        viscosity: float = 0.1

        def for_resolution(self, side):
            return self

    assert finer_reference(Plain(), 32, "periodic") is None


def test_the_reference_paths_own_error_is_measured_and_costs_are_one_sample_calls(trained_small):
    surrogate, _ = trained_small
    ledger = measure_ledger(surrogate, 6, seed=5, reference_samples=2)
    by_path = {e.path: e for e in ledger.entries if e.path != RUNG_PATH}
    reference = by_path[REFERENCE_PATH]
    # The direct solve on the data's 33-node grid, against the same solve on 257 nodes: a discretisation
    # error of about a percent, not the zero a comparison with itself gives.
    assert 1e-4 < reference.error_quantile < 0.05, reference
    rungs = [e for e in ledger.entries if e.path == RUNG_PATH]
    assert rungs and min(e.error_quantile for e in rungs) >= 0.5 * reference.error_quantile
    # A cheap reference answers every sample, not the two asked at least: on the same samples it records
    # what the same solve records as the rung on the data's grid.
    same = next(e for e in rungs if e.rung == "direct LDL^T, grid 33")
    assert reference.error_quantile == pytest.approx(same.error_quantile, rel=1e-6)
    assert all(e.seconds > 0 for e in ledger.entries)
    assert by_path[SURROGATE_PATH].error_quantile > reference.error_quantile
