"""An example pdeserve plugin: the Allen-Cahn equation, solved with scikit-fem, as a PDE family."""

from pdeserve_allen_cahn.family import ALLEN_CAHN, AllenCahnParameters

__all__ = ["ALLEN_CAHN", "AllenCahnParameters"]
