"""Fault-injection suite (issue 6): every test uses one torch thread, as its child processes do
(OMP_NUM_THREADS=1), so that killed-and-resumed runs can be compared bit for bit."""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
