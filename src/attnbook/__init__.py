"""attnbook: the code behind 'Attention, from alignment to kernels'.

Modules, each importing only those above it:
    seeds                      ATTNBOOK_SEED, and the metrics `make seeds` collects
    data                       the running task, vocabularies, batches
    attention                  scores, masked softmax, scaled dot-product attention, masks
    positional, multihead      position encodings and multi-head attention
    seq2seq                    encoder-decoder models of Part I
    train, viz, bench, checks  training loops, plots, timing, exercise checks
"""

__version__ = "0.1.0"
