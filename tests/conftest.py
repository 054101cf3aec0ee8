import os

# Keep every Ray address on loopback in tests (see README, "Testing").
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # no gRPC info lines in test output
# `make test` runs two pytest workers on two cores: one thread of kernels each (two threads
# each, four on two cores, made small convolutions many times slower)
for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(name, "1")
