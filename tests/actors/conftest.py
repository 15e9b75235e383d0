import pytest

from tests.actors.helpers import Actors


@pytest.fixture
def actors(tmp_path):
    a = Actors(tmp_path)
    yield a
    a.close()


def pytest_configure(config):
    config.addinivalue_line("markers", "grace(seconds): the Manager's worker grace period in a test")
