"""Shared test setup.

Without a GPU, Triton's kernels run in its interpreter, which must be switched on
before anything imports triton (tests/test_flash_triton.py, chapter 11's checks).
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


import matplotlib  # noqa: E402
import pytest  # noqa: E402

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def close_figures():
    """Every test's figures are closed after it, so hundreds of tests do not pile them up."""
    yield
    import matplotlib.pyplot as plt
    plt.close("all")
