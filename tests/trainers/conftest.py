import pytest

from trainers.data import digits

SMALL_CHAIN = {
    "s0_depth": 1,
    "s0_width": 8,
    "s0_kernel": 3,
    "s0_expand": 1,
    "s1_depth": 2,
    "s1_width": 16,
    "s1_kernel": 5,
    "s1_expand": 3,
}
SMALL_NB201 = {
    "edge_1_0": "nor_conv_3x3",
    "edge_2_0": "nor_conv_1x1",
    "edge_2_1": "avg_pool_3x3",
    "edge_3_0": "skip_connect",
    "edge_3_1": "none",
    "edge_3_2": "nor_conv_3x3",
}
SMALL_MLP = {"layers": 2, "width": 32}
SMALL = {"mlp": SMALL_MLP, "chain": SMALL_CHAIN, "nb201": SMALL_NB201}
OPTIONS = {"mlp": {}, "chain": {}, "nb201": {"channels": 8}}


@pytest.fixture(scope="session")
def data():
    return digits()


def never_trained(*args, **kwargs):
    """Patched over `trainers.trial.train_phase` where a trial must end before training."""
    raise AssertionError("trained")
