"""A small robust least-squares solver for the six pose numbers (Levenberg–Marquardt with
iteratively reweighted residuals and Gaussian priors, simple bounds by clipping).

Why not ``scipy.optimize.least_squares``: with thousands of residuals and six unknowns its bounded
trust-region step runs an SVD of the full Jacobian per iteration (tens of milliseconds each under
load); here every iteration is one 6 × 6 solve. The robust losses are the same (Cauchy, soft-L1,
Huber): residual r (already divided by its scale) gets the IRLS weight ρ'(r²).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np

__all__ = ["Loss", "robust_weights", "robust_cost", "solve_robust", "SolveResult"]

Loss = Literal["cauchy", "soft_l1", "huber", "linear"]


def robust_weights(r: np.ndarray, loss: Loss) -> np.ndarray:
    """IRLS weights ρ'(z) with z = r² (``scipy.optimize.least_squares`` conventions, f_scale = 1)."""
    z = r * r
    if loss == "cauchy":
        return 1.0 / (1.0 + z)
    if loss == "soft_l1":
        return 1.0 / np.sqrt(1.0 + z)
    if loss == "huber":
        return np.where(z <= 1.0, 1.0, 1.0 / np.sqrt(np.maximum(z, 1e-12)))
    return np.ones_like(r)


def _solve_spd(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve A x = b for a small symmetric positive-definite A (Cholesky in plain Python: for 6 × 6
    this beats a LAPACK call, whose thread pool spins on a busy machine). Raises
    ``np.linalg.LinAlgError`` if A is not positive definite."""
    n = len(b)
    L = [[0.0] * n for _ in range(n)]
    a = A.tolist()
    for i in range(n):
        for j in range(i + 1):
            t = a[i][j] - sum(L[i][k] * L[j][k] for k in range(j))
            if i == j:
                if t <= 0.0:
                    raise np.linalg.LinAlgError("not positive definite")
                L[i][i] = t**0.5
            else:
                L[i][j] = t / L[j][j]
    y = [0.0] * n
    for i in range(n):
        y[i] = (b[i] - sum(L[i][k] * y[k] for k in range(i))) / L[i][i]
    x = [0.0] * n
    for i in reversed(range(n)):
        x[i] = (y[i] - sum(L[k][i] * x[k] for k in range(i + 1, n))) / L[i][i]
    return np.array(x)


def robust_cost(r: np.ndarray, loss: Loss, weights: np.ndarray | None = None) -> float:
    z = r * r
    if loss == "cauchy":
        rho = np.log1p(z)
    elif loss == "soft_l1":
        rho = 2.0 * (np.sqrt(1.0 + z) - 1.0)
    elif loss == "huber":
        rho = np.where(z <= 1.0, z, 2.0 * np.sqrt(z) - 1.0)
    else:
        rho = z
    return 0.5 * float(rho.sum() if weights is None else (weights * rho).sum())


@dataclass(frozen=True)
class SolveResult:
    x: np.ndarray
    cost: float  # robust data cost + prior cost at x
    iterations: int
    weights: np.ndarray  # final IRLS weights of the data residuals


def solve_robust(
    residuals_and_jacobian: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    x0: np.ndarray,
    *,
    prior_mean: np.ndarray,
    prior_sigma: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    loss: Loss = "cauchy",
    periodic: tuple[int, ...] = (0,),
    max_iter: int = 15,
    tol: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> SolveResult:
    """Minimise ½Σ wᵢρ(rᵢ²) + ½Σ((x − μ)/σ)² with Levenberg–Marquardt on reweighted residuals
    (``weights`` wᵢ default 1: the statistical weight of each residual, outside the robust loss).

    ``residuals_and_jacobian(x)`` returns (r (N,), J (N, 6)), residuals already divided by their
    scale. Parameters listed in ``periodic`` are angles: the prior difference wraps at 2π.
    ``tol``: per-parameter step below which the iteration stops (default 1e-6 rad / 1e-4 m)."""
    x = np.clip(np.asarray(x0, dtype=np.float64).copy(), lower, upper)
    tol = np.array([1e-6, 1e-6, 1e-6, 1e-4, 1e-4, 1e-4]) if tol is None else tol
    inv_var = 1.0 / prior_sigma**2

    def prior_diff(v: np.ndarray) -> np.ndarray:
        d = v - prior_mean
        for k in periodic:
            d[k] = (d[k] + np.pi) % (2 * np.pi) - np.pi
        return d

    def total(v: np.ndarray, r: np.ndarray) -> float:
        return robust_cost(r, loss, weights) + 0.5 * float((prior_diff(v) ** 2 * inv_var).sum())

    r, J = residuals_and_jacobian(x)
    cost = total(x, r)
    lam = 1e-3
    it = 0
    wstat = np.ones(len(r)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = robust_weights(r, loss)
    for it in range(1, max_iter + 1):
        w = robust_weights(r, loss) * wstat
        # normal equations with einsum (no BLAS call: its threads spin on a busy machine)
        A = np.einsum("ni,nj->ij", J, J * w[:, None]) + np.diag(inv_var)
        g = np.einsum("ni,n->i", J, w * r) + prior_diff(x) * inv_var
        improved = False
        for _ in range(8):
            try:
                step = -_solve_spd(A + lam * np.diag(np.diag(A)), g)
            except np.linalg.LinAlgError:
                lam *= 10
                continue
            xn = np.clip(x + step, lower, upper)
            rn, Jn = residuals_and_jacobian(xn)
            cn = total(xn, rn)
            if cn <= cost:
                improved = True
                break
            lam *= 10
        if not improved:
            break
        done = np.all(np.abs(xn - x) < tol)
        x, r, J, cost = xn, rn, Jn, cn
        lam = max(lam / 10, 1e-7)
        if done:
            break
    return SolveResult(x, cost, it, robust_weights(r, loss))
