import os

import pytest

# Triton decides at its first import whether it runs kernels in its CPU interpreter. The Triton tests need it,
# and any test module may import triton first, so it is set before collection. It changes nothing else: CPU
# tensors only reach Triton when MMSLAK_DWCONV_BACKEND=triton forces it.
os.environ.setdefault('TRITON_INTERPRET', '1')


def is_toy_e2e(item):
    module = getattr(item, 'module', None)
    return module is not None and module.__name__.rpartition('.')[2] == 'test_toy_e2e'


def pytest_collection_modifyitems(items):
    """The toy end-to-end tests go last: their runs train in the background from the session's first test
    on (``toy_e2e_runs``), and the tests wait for them."""
    items.sort(key=is_toy_e2e)


@pytest.fixture(scope='session', autouse=True)
def toy_e2e_runs(request, tmp_path_factory):
    """Start the runs of the selected toy end-to-end tests (tests/downstream/test_toy_e2e.py) before any
    test, and kill what still runs when the session ends; None when no such test is selected."""
    modules = {item.module for item in request.session.items if is_toy_e2e(item)}
    if not modules:
        yield None
        return
    [module] = modules
    runs = module.ToyRuns(module.selected_tasks(request.session.items), tmp_path_factory)
    yield runs
    runs.stop()
