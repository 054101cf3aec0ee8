import os

# Keep every Ray address on loopback in tests (see README, "Testing").
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # no gRPC info lines in test output
