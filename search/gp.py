"""A Gaussian process for mixed spaces, and the acquisition functions on top of it.

Features (`features(space, configs)`, shape `(n, d)`): a Float or Int is its unit-interval
coordinate, a Choice is its option index; an inactive parameter is 0.5 (numeric) or -1
(categorical). The kernel adds three parts, weighted by fitted scales:

    k(x, x') = s_m * matern52(r) + s_a * mean_c e_c + s_p * mean_{c<c'} e_c e_c'
    r^2 = sum_d w_d * delta_d,   delta_d = (x_d - x'_d)^2 numeric, [x_d != x'_d] categorical

where `e_c = [x_c == x'_c]` over the categorical dimensions only. The first- and second-order
additive terms make costs that are sums over parts, or over pairs of parts, cheap to learn
(the latency of a cell is largely a sum over its edges). Numeric dimensions stay out of
them: there they made `bo` worse on Hartmann6 (benchmarks/README.md).
Hyperparameters (log w_d, log s_m, log s_a, log s_p, log noise) maximize the marginal
likelihood plus a log-normal prior, by L-BFGS with analytic gradients.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.linalg import cho_factor, cho_solve, solve_triangular
from scipy.optimize import minimize
from scipy.special import erfcx, log_ndtr, ndtr

from spaces import Choice, Space

SQRT5 = math.sqrt(5.0)
SCALES = ("s_m", "s_a", "s_p", "noise")
NOISE_FLOOR = 1e-6
PRIOR_MEAN = {"w": 0.0, "s_m": 0.0, "s_a": -1.0, "s_p": -2.0, "noise": -9.0}
PRIOR_STD = {"w": 2.0, "s_m": 1.0, "s_a": 1.5, "s_p": 1.5, "noise": 2.0}


def categorical_mask(space: Space) -> np.ndarray:
    return np.array([isinstance(space[n], Choice) for n in space.names])


def features(space: Space, configs) -> np.ndarray:
    """Feature rows for `configs`, shape `(len(configs), len(space))`."""
    rows = np.empty((len(configs), len(space)))
    for j, name in enumerate(space.names):
        param = space[name]
        if isinstance(param, Choice):
            rows[:, j] = [param.index(c[name]) if name in c else -1 for c in configs]
        else:
            rows[:, j] = [param.to_unit(c[name]) if name in c else 0.5 for c in configs]
    return rows


def _deltas(a: np.ndarray, b: np.ndarray, cat: np.ndarray) -> np.ndarray:
    diff = a[:, None, :] - b[None, :, :]
    return np.where(cat, (diff != 0).astype(float), diff**2)


def _orders(same: np.ndarray, d: int) -> np.ndarray:
    """From the count of equal categorical coordinates, the first- and second-order additive
    kernels over `d` categorical dimensions, stacked: the share of equal coordinates and the
    share of equal pairs of coordinates."""
    first = same / d if d else np.zeros_like(same)
    pairs = same * (same - 1) / (d * (d - 1)) if d > 1 else np.zeros_like(same)
    return np.stack([first, pairs])


def _matern(r2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """matern52 as a function of r^2, and its derivative with respect to r^2."""
    r = np.sqrt(np.maximum(r2, 0.0))
    e = np.exp(-SQRT5 * r)
    return (1 + SQRT5 * r + 5.0 / 3.0 * r2) * e, -5.0 / 6.0 * (1 + SQRT5 * r) * e


class GP:
    """A zero-mean GP on standardized targets; `fit` learns hyperparameters, `predict` gives
    the posterior mean and standard deviation in the targets' own units."""

    def __init__(self, cat: np.ndarray):
        self.cat = np.asarray(cat, dtype=bool)
        d = len(self.cat)
        self.theta = np.concatenate([np.zeros(d), [PRIOR_MEAN[k] for k in SCALES]])

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, x: np.ndarray, y: np.ndarray, *, theta0: np.ndarray | None = None) -> GP:
        y = np.asarray(y, dtype=float)
        self.y_mean, self.y_std = float(y.mean()), float(y.std()) or 1.0
        self._set_data(np.asarray(x, dtype=float), (y - self.y_mean) / self.y_std)
        fresh = theta0 is None or len(theta0) != len(self.theta)  # older states had fewer
        start = self.theta if fresh else np.asarray(theta0, dtype=float)
        d = len(self.cat)
        bounds = [(-8.0, 6.0)] * d + [(-4.0, 4.0), (-8.0, 3.0), (-8.0, 3.0)]
        bounds += [(math.log(NOISE_FLOOR), 1.0)]
        result = minimize(
            self._neg_log_posterior,
            start,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": 200},
        )
        self.theta = result.x if np.all(np.isfinite(result.x)) else start
        self._factorize()
        return self

    def _kernel(self, theta) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The data's kernel matrix, its Matern part and that part's derivative in r^2."""
        d = len(self.cat)
        w, s_m, s_a, s_p, noise = np.exp(theta[:d]), *np.exp(theta[d:])
        k_m, dk = _matern(self._d2 @ w)
        k = s_m * k_m + s_a * self._add[0] + s_p * self._add[1]
        return k + (noise + NOISE_FLOOR) * np.eye(len(self.z)), k_m, dk

    def _neg_log_posterior(self, theta) -> tuple[float, np.ndarray]:
        k, k_m, dk = self._kernel(theta)
        try:
            factor = cho_factor(k, lower=True)
        except np.linalg.LinAlgError:
            return 1e10, np.zeros_like(theta)
        alpha = cho_solve(factor, self.z)
        k_inv = cho_solve(factor, np.eye(len(self.z)))
        log_det = 2.0 * np.log(np.diag(factor[0])).sum()
        nll = 0.5 * self.z @ alpha + 0.5 * log_det
        inner = np.outer(alpha, alpha) - k_inv  # d nll / d theta = -tr(inner dK) / 2
        d = len(self.cat)
        w, s_m, s_a, s_p, noise = np.exp(theta[:d]), *np.exp(theta[d:])
        grad_w = s_m * w * np.einsum("ij,ijd->d", inner * dk, self._d2)
        grad_rest = [
            s_m * np.sum(inner * k_m),
            s_a * np.sum(inner * self._add[0]),
            s_p * np.sum(inner * self._add[1]),
            noise * np.trace(inner),
        ]
        grad = -0.5 * np.concatenate([grad_w, grad_rest])
        mean, std = self._prior_arrays()
        nll += 0.5 * np.sum(((theta - mean) / std) ** 2)
        grad += (theta - mean) / std**2
        return float(nll), grad

    def _prior_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        d = len(self.cat)
        keys = ["w"] * d + list(SCALES)
        return np.array([PRIOR_MEAN[k] for k in keys]), np.array([PRIOR_STD[k] for k in keys])

    def _factorize(self) -> None:
        k, _, _ = self._kernel(self.theta)
        self._chol = np.linalg.cholesky(k)
        self._alpha = cho_solve((self._chol, True), self.z)

    # -- prediction ---------------------------------------------------------------------------
    def _cross(self, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """r^2 and the additive terms between `x` and the data, as matrix products: a
        categorical dimension becomes one-hot columns (index -1 included)."""
        num = ~self.cat
        a, b = x[:, num], self.x[:, num]
        sw = np.sqrt(w[num])
        r2 = ((a * sw) ** 2).sum(1)[:, None] + ((b * sw) ** 2).sum(1)[None, :]
        r2 -= 2.0 * (a * sw) @ (b * sw).T
        same = np.zeros_like(r2)
        if self.cat.any():
            oh_a, oh_b, weights = self._one_hot(x), self._one_hot(self.x), self._slot_weights(w)
            r2 += w[self.cat].sum() - (oh_a * weights) @ oh_b.T
            same = oh_a @ oh_b.T
        return np.maximum(r2, 0.0), _orders(same, int(self.cat.sum()))

    def _one_hot(self, x: np.ndarray) -> np.ndarray:
        cols = [np.equal.outer(x[:, j], self._levels[j]) for j in np.flatnonzero(self.cat)]
        return np.hstack(cols).astype(float)

    def _slot_weights(self, w: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [np.full(len(self._levels[j]), w[j]) for j in np.flatnonzero(self.cat)]
        )

    def condition(self, x_new: np.ndarray, y_new: np.ndarray) -> GP:
        """The same hyperparameters, with `(x_new, y_new)` added to the data (no refit)."""
        other = GP(self.cat)
        other.theta = self.theta
        other.y_mean, other.y_std = self.y_mean, self.y_std
        z_new = (np.asarray(y_new) - self.y_mean) / self.y_std
        other._set_data(np.vstack([self.x, x_new]), np.concatenate([self.z, z_new]))
        other._factorize()
        return other

    def _set_data(self, x: np.ndarray, z: np.ndarray) -> None:
        """Training inputs, standardized targets, and the matrices the kernel reuses."""
        self.x, self.z = x, z
        self._d2 = _deltas(x, x, self.cat)
        same = (x[:, None, self.cat] == x[None, :, self.cat]).sum(axis=2).astype(float)
        self._add = _orders(same, int(self.cat.sum()))
        self._levels = {j: np.unique(x[:, j]) for j in np.flatnonzero(self.cat)}

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation at `x` (shape `(m, d)`), each `(m,)`."""
        d = len(self.cat)
        w, s_m, s_a, s_p, _ = np.exp(self.theta[:d]), *np.exp(self.theta[d:])
        r2, add = self._cross(x, w)
        k_star = s_m * _matern(r2)[0] + s_a * add[0] + s_p * add[1]
        mean = k_star @ self._alpha
        v = solve_triangular(self._chol, k_star.T, lower=True)
        own = _orders(np.full(len(x), float(self.cat.sum())), int(self.cat.sum()))
        prior_var = s_m + s_a * own[0] + s_p * own[1]
        var = np.maximum(prior_var - np.sum(v * v, axis=0), 1e-12)
        return self.y_mean + self.y_std * mean, self.y_std * np.sqrt(var)


# -- acquisition functions (all for maximization) ---------------------------------------------
def expected_improvement(mean, std, best) -> np.ndarray:
    """EI of a maximization: `std * (z * Phi(z) + phi(z))`, `z = (mean - best) / std`."""
    z = (np.asarray(mean) - best) / std
    return std * (z * ndtr(z) + np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi))


def log_expected_improvement(mean, std, best) -> np.ndarray:
    """log EI, accurate where EI underflows (z far below zero)."""
    z = (np.asarray(mean, dtype=float) - best) / std
    return np.log(std) + _log_h(z)


def _log_h(z: np.ndarray) -> np.ndarray:
    """log(phi(z) + z Phi(z)), via erfcx on the left tail to avoid cancellation."""
    out = np.empty_like(z)
    right = z > -1.0
    zr = z[right]
    out[right] = np.log(zr * ndtr(zr) + np.exp(-0.5 * zr**2) / math.sqrt(2 * math.pi))
    zl = z[~right]
    log_phi = -0.5 * zl**2 - 0.5 * math.log(2 * math.pi)
    # phi(z) + z Phi(z) = phi(z) * (1 - |z| sqrt(pi/2) erfcx(|z|/sqrt2)), the bracket in (0, 1)
    t = np.log(np.abs(zl)) + 0.5 * math.log(math.pi / 2) + np.log(erfcx(-zl / math.sqrt(2)))
    out[~right] = log_phi + np.log(-np.expm1(np.minimum(t, -1e-300)))
    return out


def upper_confidence_bound(mean, std, kappa: float) -> np.ndarray:
    return np.asarray(mean) + kappa * np.asarray(std)


def log_probability_of_improvement(mean, std, best) -> np.ndarray:
    return log_ndtr((np.asarray(mean) - best) / std)


def log_probability_below(mean, std, bound) -> np.ndarray:
    """log P(value <= bound) under a normal posterior: a constraint's log feasibility."""
    return log_ndtr((bound - np.asarray(mean)) / std)


def predict_in_chunks(model, feats: np.ndarray, chunk: int = 4096):
    """`model.predict(feats)` a `chunk` of rows at a time (the kernel matrix stays small)."""
    parts = [model.predict(feats[i : i + chunk]) for i in range(0, len(feats), chunk)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
