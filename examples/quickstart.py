import numpy as np

import search
from spaces import Choice, Float, Int, Space

space = Space(
    {
        "lr": Float(1e-4, 1e-1, log=True),
        "layers": Int(1, 6),
        "act": Choice(["relu", "gelu"]),
        "dropout": Choice([False, True]),
        "p": Float(0.05, 0.5, when={"dropout": True}),  # only active with dropout on
    }
)
searcher = search.create(
    "random", space, metric="loss", mode="min", seed=0, constraints={"latency_ms": 5.0}
)
for _ in range(40):
    trial = searcher.ask()
    c = trial.config
    loss = (np.log10(c["lr"]) + 2) ** 2 - 0.2 * c["layers"] + 0.3 * (c["act"] == "relu")
    searcher.tell(trial.id, {"loss": loss, "latency_ms": 1.2 * c["layers"]})

best = searcher.best()  # the best trial with latency_ms <= 5.0
print(best["config"], round(best["metrics"]["loss"], 3))
state = searcher.state_dict()  # JSON: load_state_dict(state) continues identically
