"""Self-supervised learning: contrastive losses (SimCLR, MoCo) and the evaluation of frozen features."""
