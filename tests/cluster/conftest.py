import pytest


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray with 2 CPUs for the tests that run studies in this process."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
