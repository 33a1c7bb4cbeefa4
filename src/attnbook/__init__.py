"""attnbook: the code behind 'Attention, from alignment to kernels'.

Modules, each importing only those above it:
    seeds                      ATTNBOOK_SEED, and the metrics `make seeds` collects
    data                       the running task, vocabularies, batches
    attention                  scores, masked softmax, scaled dot-product attention, masks
    positional, multihead      position encodings and multi-head attention
    seq2seq, transformer, lm   encoder-decoder models of Part I, the Transformer, language models
    data_text                  the text chapter 9's language model reads (Python's own library)
    cost, flash                the cost of attention; FlashAttention in PyTorch and in Triton
    sparse, linear_attention   sliding-window and sparse masks, a capped KV cache; linear attention
    ring                       ring attention over torch.distributed (gloo on CPUs, NCCL on GPUs)
    train, viz, diagrams       training loops, plots of results, drawings of mechanisms
    bench, checks              timing, memory and the benchmarks; exercise checks
"""

__version__ = "0.1.0"
