"""The fast path of training: a packed forward for BERT-family backbones and compiled CPU kernels."""
