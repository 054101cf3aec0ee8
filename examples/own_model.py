"""Bring your own model: a PyTorch model and training loop of your own, tuned by paretune on
Ray Tune under a latency bound, two ways.

    python examples/own_model.py             # ParetuneSearch("bo") in your own tune.Tuner
    paretune run examples/own-model.yaml     # a study naming `own_model:train` (below)

The study way adds paretune's Parquet results, resume after a crash, the progress line and
`paretune results/plot`; the Tuner way keeps your own script, scheduler and callbacks.
"""

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

SPACE = {  # the same words as a study's `space:` section
    "width": {"low": 4, "high": 32, "log": True},
    "hidden": [16, 32, 64],
    "optimizer": ["adam", "sgd"],
    "lr": {"low": 1.0e-3, "high": 0.1, "log": True},
    "momentum": {"low": 0.5, "high": 0.99, "when": {"optimizer": "sgd"}},
    "epochs": 6,
}


class Net(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(8 * width, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, x):
        return self.head(self.features(x))


def fit(config: dict, on_epoch) -> nn.Module:
    """Your training loop: `on_epoch(model, val_acc, loss)` after each epoch."""
    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.images[:, None] / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target)
    model = Net(config["width"], config["hidden"])
    if config["optimizer"] == "sgd":
        opt = torch.optim.SGD(model.parameters(), config["lr"], momentum=config["momentum"])
    else:
        opt = torch.optim.Adam(model.parameters(), config["lr"])
    for _ in range(config["epochs"]):
        model.train()
        for batch in torch.randperm(1400).split(64):
            loss = F.cross_entropy(model(x[batch]), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            val_acc = (model(x[1400:]).argmax(1) == y[1400:]).float().mean().item() * 100
        on_epoch(model, val_acc, loss.item())
    return model


def train(config: dict, report) -> None:
    """The study way: `report(...)` per epoch, `report.measure` for the costs."""
    example = torch.zeros(64, 1, 8, 8)
    report.measure(Net(config["width"], config["hidden"]), example)  # too slow: skipped here
    model = fit(config, lambda model, acc, loss: report(val_acc=acc, loss=loss))
    report.measure(model, example)  # the trained model's params, MACs, bytes, latency
    # returning None: the final result is the last epoch's metrics and the costs


def main(bound_ms: float = 0.2, trials: int = 20):
    """The Tuner way: your own trainable, scheduler and Tuner; paretune's `bo` searches."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    import trainers
    from cluster.raytune import ParetuneSearch

    def trainable(config):
        latency = trainers.measure(Net(config["width"], config["hidden"]), torch.zeros(64, 1, 8, 8))
        fit(config, lambda m, acc, loss: tune.report({"val_acc": acc, **latency}))

    search = ParetuneSearch(
        "bo", SPACE, metric="val_acc", mode="max", constraints={"latency_ms": bound_ms}, max_t=6
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=search,
            scheduler=ASHAScheduler(max_t=6, grace_period=2),
            metric="val_acc",
            mode="max",
            num_samples=trials,
            max_concurrent_trials=2,
        ),
    )
    tuner.fit()
    best = search.paretune.best()  # the best trial within the latency bound
    print(best and {**best["config"], **best["metrics"]})


if __name__ == "__main__":
    main()
