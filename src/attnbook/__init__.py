"""attnbook: the code behind 'Attention, from alignment to kernels'.

Modules, each importing only those above it:
    data                       the running task, vocabularies, batches
    attention                  scores, masked softmax, scaled dot-product attention, masks
    seq2seq                    encoder-decoder models of Part I
    train, viz, checks         training loops, plots, exercise checks
"""

__version__ = "0.1.0"
