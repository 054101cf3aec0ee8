import os

import pytest

# Keep every Ray address on loopback in tests (see README, "Testing").
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # no gRPC info lines in test output
# `make test` runs two pytest workers on two cores: one thread of kernels each (two threads
# each, four on two cores, made small convolutions many times slower)
for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(name, "1")


# Tests that start Ray (a local one, or drivers and clusters of their own) run one after another
# on one pytest worker (`make test` runs `-n 2 --dist loadgroup`): two Rays starting at once on
# two cores slowed each other more than the split gained, and a session fixture (one killed
# study, one local Ray) is made once, not once per worker.
RAY_MODULES = {"test_faults", "test_first_hour", "test_resume_and_nodes", "test_darts"}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        name = item.module.__name__.rsplit(".", 1)[-1]
        if name in RAY_MODULES or {"local_ray", "killed_copy"} & set(item.fixturenames):
            item.add_marker(pytest.mark.xdist_group("ray"))
