"""An RL controller: a factorized categorical policy (one decision per parameter, in order,
inactive ones skipped) trained with REINFORCE, a moving-average baseline and an entropy bonus.
Torch is imported when the searcher is created, not with `search`."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from search.base import Searcher
from search.candidates import mutate
from search.pareto import dominating
from spaces import Choice, Int

REWARDS = ("excess", "soft", "hard")
ADVANTAGES = ("rank", "scaled")
COST_EXPONENTS = {"excess": -1.0, "soft": -0.07}  # MnasNet's, for its hard and soft bounds
DRAWS = 200  # policy draws per proposal while they repeat an evaluated config


class ControllerSearcher(Searcher):
    """A REINFORCE controller: a policy over every parameter, rewarded by each result.

    Options: `lr` (the controller's Adam step), `entropy` (the entropy bonus's weight),
    `baseline_decay` (the moving-average reward baseline's decay), `bins` (levels of a
    Float or wide Int), `reward` ("excess", the default: `metric * prod max(cost / bound, 1)
    ** w`, only a cost over its bound is penalized, MnasNet's hard-bound reward; "soft":
    MnasNet's `metric * prod (cost / bound) ** w`, which also favours costs under the bound;
    "hard": an infeasible result scores below every reward seen), `cost_exponent` (w;
    by default MnasNet's, -1 for "excess", -0.07 for "soft"), `advantage` ("rank", the
    default: a reward's quantile among all rewards so far, less the baseline of quantiles,
    which no long tail of poor results flattens; "scaled": the reward less its baseline,
    over the rewards' standard deviation).
    Proposals do not repeat a config already told or pending while the policy or, failing
    it, the prior yields a new one.
    With several objectives the metric is 1 minus the share of usable results that dominate
    the result (1 on the Pareto front), which no scale or offset of an objective changes.
    With rungs (`search.fidelity.Rungs`), a trial stopped at a rung is rewarded by its standing
    there (a quantile), less the median's: `(standing - 0.5) * sqrt(12)`, whatever `advantage`;
    the baseline and the rewards stay those of full results."""

    name = "rl"

    def __init__(
        self,
        space,
        *,
        lr: float = 0.1,
        entropy: float = 0.01,
        baseline_decay: float = 0.9,
        bins: int = 8,
        reward: str = "excess",
        cost_exponent: float | None = None,
        advantage: str = "rank",
        **common,
    ):
        super().__init__(space, **common)
        import torch

        if reward not in REWARDS:
            raise ValueError(f"rl: reward must be one of {list(REWARDS)}, got {reward!r}")
        if advantage not in ADVANTAGES:
            raise ValueError(f"rl: advantage must be one of {list(ADVANTAGES)}, got {advantage!r}")
        if not isinstance(bins, int) or bins < 2:
            raise ValueError(f"rl: bins must be an integer >= 2, got {bins!r}")
        if not 0.0 <= baseline_decay < 1.0:
            raise ValueError(f"rl: baseline_decay must be in [0, 1), got {baseline_decay!r}")
        self.entropy, self.decay, self.bins = float(entropy), float(baseline_decay), bins
        if cost_exponent is None:
            cost_exponent = COST_EXPONENTS.get(reward, 0.0)
        self.reward_kind, self.cost_exponent = reward, float(cost_exponent)
        self.advantage_kind = advantage
        self._torch = torch
        self.logits = {
            name: torch.zeros(self._levels(name), dtype=torch.float64, requires_grad=True)
            for name in space.names
        }
        self.optimizer = torch.optim.Adam(list(self.logits.values()), lr=lr)
        self.baseline: float | None = None
        self.rewards: list[float] = []

    # -- decisions ------------------------------------------------------------------------------
    def _levels(self, name: str) -> int:
        param = self.space[name]
        if isinstance(param, Choice):
            return len(param.options)
        if isinstance(param, Int) and param.high - param.low < self.bins:
            return param.high - param.low + 1
        return self.bins

    def _value(self, name: str, level: int):
        param = self.space[name]
        if isinstance(param, Choice):
            return param.options[level]
        if isinstance(param, Int) and self._levels(name) == param.high - param.low + 1:
            return param.low + level
        return param.from_unit((level + 0.5) / self.bins)

    def _level(self, name: str, value) -> int:
        param = self.space[name]
        if isinstance(param, Choice):
            return param.index(value)
        if isinstance(param, Int) and self._levels(name) == param.high - param.low + 1:
            return int(value) - param.low
        return min(int(param.to_unit(value) * self.bins), self.bins - 1)

    def probabilities(self, name: str) -> np.ndarray:
        """The policy's current distribution over `name`'s levels."""
        return self._torch.softmax(self.logits[name].detach(), 0).numpy()

    def _draw(self) -> dict:
        config: dict = {}
        for name in self.space.names:
            if self.space.is_active(name, config):
                probs = self.probabilities(name)
                level = int(self.rng.choice(len(probs), p=probs / probs.sum()))
                config[name] = self._value(name, level)
        return config

    def _propose(self) -> dict:
        """A draw from the policy, redrawn (up to `DRAWS` times, then from the prior as often)
        while it repeats a config already told or pending (a repeat costs an evaluation and
        teaches nothing new) or, with a price, while it does not fit (a refusal teaches the
        policy as the worst result would; after one, half the draws change the ask's nearest
        refusal instead, see `_near_miss`)."""
        for attempt in range(2 * DRAWS):
            near = self._near_miss()  # with a price: a refusal's change, half the time
            if near is not None:
                config = mutate(self.space, self.rng, near)
            else:
                config = self._draw() if attempt < DRAWS else self.space.sample(self.rng)
            key = self.space.canonical(config)
            if not self._taken(key):
                fit = self._fits(config)  # with a price: a draw over a bound is refused
                if fit or fit is None:
                    break
        return config

    # -- learning -------------------------------------------------------------------------------
    def reward(self, metrics: Mapping) -> float:
        """The scalar the policy maximizes for one result."""
        signed = self.objective.signed(metrics)
        if len(signed) > 1:
            seen = [self.objective.signed(o["metrics"]) for o in self.usable()]
            value = 1.0 - float(dominating(np.array(seen), signed).mean()) if seen else 1.0
        else:
            value = -float(signed[0])
        if not self.objective.constraints:
            return value
        if self.reward_kind == "hard":
            if self.objective.violation(metrics) == 0:
                return value
            floor = min(self.rewards) if self.rewards else value
            spread = float(np.std(self.rewards)) if len(self.rewards) > 1 else abs(floor) or 1.0
            return floor - spread
        floor = 1.0 if self.reward_kind == "excess" else 0.0
        ratio = math.prod(
            max(metrics[name] / bound, floor, 1e-12)
            for name, bound in self.objective.constraints
            if bound > 0
        )
        factor = ratio**self.cost_exponent
        return value * factor if value >= 0 else value / factor

    def _observe(self, record: dict) -> None:
        if record.get("priced"):
            self._step(record, self._refusal_advantage())
            return
        if record["status"] == "stopped" and self.max_fidelity is not None:
            standing = self.rung_standings([record["id"]])[record["id"]]
            if standing is not None:
                self._step(record, (standing - 0.5) * math.sqrt(12.0))
            return
        if record["status"] not in ("completed", "infeasible") or record["metrics"] is None:
            return  # a failed or stopped trial says nothing reliable about its choices
        reward = self.reward(record["metrics"])
        self.rewards.append(reward)
        if self.advantage_kind == "rank":
            seen = np.array(self.rewards)
            reward = float(((seen < reward).sum() + 0.5 * (seen == reward).sum()) / len(seen))
        self.baseline = (
            reward
            if self.baseline is None
            else (self.decay * self.baseline + (1 - self.decay) * reward)
        )
        self._step(record, self._advantage(reward))

    def _refusal_advantage(self) -> float:
        """A config refused on its price scores as the worst result could: a rank of 0, or
        a reward a spread below the lowest seen; the baseline stays that of trained trials."""
        if self.advantage_kind == "rank":
            return self._advantage(0.0)
        if len(self.rewards) < 2:
            return -1.0
        return self._advantage(min(self.rewards) - float(np.std(self.rewards)))

    def _advantage(self, reward: float) -> float:
        if self.advantage_kind == "rank":  # (a refusal before any result: the median's baseline)
            baseline = 0.5 if self.baseline is None else self.baseline
            return (reward - baseline) * math.sqrt(12.0)  # 1 / the std of a uniform rank
        scale = float(np.std(self.rewards)) if len(self.rewards) > 1 else 1.0
        return (reward - self.baseline) / (scale if scale > 0 else 1.0)

    def _step(self, record: dict, advantage: float) -> None:
        torch = self._torch
        log_prob, entropy = (
            torch.zeros((), dtype=torch.float64),
            torch.zeros((), dtype=torch.float64),
        )
        for name, value in record["config"].items():
            log_p = torch.log_softmax(self.logits[name], 0)
            log_prob = log_prob + log_p[self._level(name, value)]
            entropy = entropy - (log_p.exp() * log_p).sum()
        loss = -advantage * log_prob - self.entropy * entropy
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()

    # -- state ----------------------------------------------------------------------------------
    def _extra_state(self) -> dict:
        adam = self.optimizer.state_dict()
        return {
            "logits": {n: t.detach().tolist() for n, t in self.logits.items()},
            "adam": {
                str(k): {
                    "step": float(v["step"]),
                    "exp_avg": v["exp_avg"].tolist(),
                    "exp_avg_sq": v["exp_avg_sq"].tolist(),
                }
                for k, v in adam["state"].items()
            },
            "baseline": self.baseline,
            "rewards": list(self.rewards),
        }

    def _load_extra_state(self, extra: Mapping) -> None:
        torch = self._torch
        with torch.no_grad():
            for name, values in extra["logits"].items():
                self.logits[name].copy_(torch.tensor(values, dtype=torch.float64))
        adam = self.optimizer.state_dict()
        adam["state"] = {
            int(k): {
                "step": torch.tensor(v["step"]),
                "exp_avg": torch.tensor(v["exp_avg"], dtype=torch.float64),
                "exp_avg_sq": torch.tensor(v["exp_avg_sq"], dtype=torch.float64),
            }
            for k, v in extra["adam"].items()
        }
        self.optimizer.load_state_dict(adam)
        self.baseline = extra["baseline"]
        self.rewards = [float(r) for r in extra["rewards"]]
