import shutil

import pytest

from tests.cluster.drivers import killed_after, write_study


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray with 2 CPUs for the tests that run studies in this process."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def killed_study(tmp_path_factory):
    """A 6-trial study whose driver was killed with SIGKILL after 3 finished trials, and the
    moment of the kill. Tests resume copies of it (`copy_of`), never the study itself."""
    trial = {"epochs": 30, "latency_repeats": 4}  # about 1 s a trial: the kill lands mid-study
    config, folder = write_study(tmp_path_factory.mktemp("killed"), trials=6, trial=trial)
    return folder, killed_after(config, folder, 3)


@pytest.fixture
def killed_copy(killed_study, tmp_path):
    """A copy of the killed study of its own, and the moment of the kill."""
    folder, killed_at = killed_study
    shutil.copytree(folder, tmp_path / "study")
    return tmp_path / "study", killed_at
