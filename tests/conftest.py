import os

import pytest

# Keep every Ray address on loopback in tests (see README, "Testing").
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # no gRPC info lines in test output
# `make test` runs two pytest workers on two cores: one thread of kernels each (two threads
# each, four on two cores, made small convolutions many times slower)
for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(name, "1")


# Tests that start Ray run in two groups, each on one pytest worker (`make test` runs
# `-n 2 --dist loadgroup`), the rest fill in around them: the tests that share one local Ray
# in this process (made once, not once per worker), and those that run `paretune` drivers and
# clusters of their own (one killed study, made once). Two Rays starting at once on two cores
# slow each other; two groups keep it to two.
DRIVER_MODULES = {"test_faults", "test_first_hour", "test_pricer", "test_resume_and_nodes"}


def pytest_itemcollected(item):  # as each test is collected: before xdist reads the groups
    if "local_ray" in item.fixturenames:
        item.add_marker(pytest.mark.xdist_group("local-ray"))
    elif item.module.__name__.rsplit(".", 1)[-1] in DRIVER_MODULES:
        item.add_marker(pytest.mark.xdist_group("drivers"))
