import pytest, torch


@pytest.fixture
def one_thread():
    "Tiny ops: one thread avoids OpenMP barrier waits on a loaded 2-core machine (ms per op -> us per op)."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
