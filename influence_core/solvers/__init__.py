"""Solvers of (H_S + δI) X = B: the registry (:mod:`.registry`), what they share (:mod:`.base`), and one module per
solver. Importing the package registers the built-ins, in this order: ``exact``, ``cg``, ``lissa``, ``low_rank``,
``kfac``, ``ekfac`` (:mod:`.kfac`), ``arnoldi`` (:mod:`.arnoldi`), ``pcg`` (:mod:`.pcg`).

Add a solver: a module here that calls :func:`~influence_core.solvers.registry.register_solver` (or
``register_iterative_solver`` for a matrix-free iteration), imported below.
"""

# isort: off
# The import order is the registration order, which available_solvers() lists (and the app's menus show).
from influence_core.solvers import exact, cg, lissa, low_rank  # noqa: F401 (registers the built-in solvers)
from influence_core.solvers import kfac, arnoldi  # noqa: F401 (registers kfac, ekfac, arnoldi)
from influence_core.solvers import pcg  # noqa: F401 (registers pcg: full-data CG preconditioned by the sample)
# isort: on
