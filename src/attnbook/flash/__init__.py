"""FlashAttention (chapter 11): the tiled algorithm in PyTorch and as Triton kernels.

- `attnbook.flash.reference`: online softmax and the tiled forward and backward passes
  in plain PyTorch, memory linear in the sequence length.
- `attnbook.flash.triton_kernels`: the same algorithm as Triton kernels (run in
  Triton's interpreter on a machine without CUDA).
- `attnbook.flash.function`: `flash_attention`, the kernels behind an autograd Function.
"""

__all__ = ["flash_attention"]


def __getattr__(name: str):
    """Import the Triton kernels only when asked for: the reference algorithm in
    `attnbook.flash.reference` is plain PyTorch and needs no Triton."""
    if name == "flash_attention":
        from attnbook.flash.function import flash_attention
        return flash_attention
    raise AttributeError(f"module 'attnbook.flash' has no attribute {name!r}")
