"""One Spark standalone master on 127.0.0.1 for all integration tests: each module's
`cluster` fixture adds the workers its tests need and removes them when done."""
import pytest

from standalone import Cluster


@pytest.fixture(scope="session")
def master(tmp_path_factory):
    cl = Cluster(tmp_path_factory.mktemp("standalone"))
    try:
        yield cl
    finally:
        cl.stop()
