"""Self-supervised learning (Part I of the course), one idea per module:

- :mod:`~minidiff.ssl.augment`: batched on-device augmentations (random resized crop, flip, colour jitter, blur);
- :mod:`~minidiff.ssl.rotation`: RotNet rotation prediction and frozen-feature extraction;
- :mod:`~minidiff.ssl.simclr`: NT-Xent and the SimCLR model (encoder + projection head);
- :mod:`~minidiff.ssl.moco`: MoCo v2 (momentum encoder, queue of negatives, InfoNCE);
- :mod:`~minidiff.ssl.vae`: the VAE, the reparameterisation trick and the ELBO;
- :mod:`~minidiff.ssl.vqvae`: the VQ-VAE (codebook, straight-through estimator, commitment loss, codebook usage);
- :mod:`~minidiff.ssl.evaluate`: weighted kNN, linear probe and low-label probes of frozen features.
"""
