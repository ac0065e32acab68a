"""The solvers' shared checks (influence_core.solvers.base): CG and LiSSA refuse a stopping rule that is not a finite
tol > 0 and max_iter >= 1 (check_budget) with a message naming the option."""

import numpy as np
import pytest
import torch

from influence_core.solvers.cg import solve_cg
from influence_core.solvers.lissa import solve_lissa


def _spd(p=6):
    A = torch.tensor(np.random.default_rng(0).normal(size=(p, p)))
    return lambda V: V @ (A @ A.T + torch.eye(p, dtype=A.dtype))


@pytest.mark.parametrize("solver", [solve_cg, solve_lissa])
@pytest.mark.parametrize(
    "options, message",
    [
        ({"max_iter": 0}, "max_iter"),
        ({"max_iter": -5}, "max_iter"),
        ({"max_iter": 2.5}, "max_iter"),
        ({"tol": float("nan")}, "tol"),
        ({"tol": -1e-3}, "tol"),
        ({"tol": 0.0}, "tol"),
        ({"tol": float("inf")}, "tol"),
    ],
)
def test_iterative_solvers_refuse_a_bad_stopping_rule(solver, options, message):
    with pytest.raises(ValueError, match=message):
        solver(_spd(), torch.ones(2, 6, dtype=torch.float64), 0.1, **options)
