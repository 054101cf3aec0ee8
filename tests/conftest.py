import os

# Keep every Ray address on loopback in tests (see README, "Testing").
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
