"""Shared test settings."""

import pytest
import torch

from cluster.embeddings import EmbeddingBank
from nasdb.space import default_space
from nasdb.tasks import load_builtin_task


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Child models and predictors are tiny: one thread is much faster than two on a busy 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- module fixtures of the child-training tests (a test module may define its own) --------------
@pytest.fixture(scope="module")
def space():
    return default_space()


@pytest.fixture(scope="module")
def task():
    return load_builtin_task("digits10_small")  # 10 classes, 300 training images, 500 validation


@pytest.fixture(scope="module")
def bank(task):
    return EmbeddingBank.fit(task.x_train)  # the default space's 7 modules, fitted in milliseconds
