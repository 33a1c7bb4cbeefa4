"""FlashAttention (chapter 11): the tiled algorithm in PyTorch and as Triton kernels.

- `attnbook.flash.reference`: online softmax and the tiled forward and backward passes
  in plain PyTorch, memory linear in the sequence length.
- `attnbook.flash.triton_kernels`: the same algorithm as Triton kernels (run in
  Triton's interpreter on a machine without CUDA).
- `attnbook.flash.function`: `flash_attention`, the kernels behind an autograd Function.
"""

from attnbook.flash.function import flash_attention

__all__ = ["flash_attention"]
