"""Shared test setup.

Without a GPU, Triton's kernels run in its interpreter, which must be switched on
before anything imports triton (tests/test_flash_triton.py, chapter 11's checks).
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
