"""Networks: time-conditioned MLP for 2-D toys, a compact diffusion U-Net a Diffusion Transformer (DiT), ResNet encoders."""

from .autoencoder import AutoencoderKL
from .dit import DiT, DiTConfig, dit_config, dit_flops
from .embeddings import TimestepEmbedder, timestep_embedding
from .mlp import TimeMLP
from .resnet import ConvNet, ResNet, make_encoder, resnet18
from .unet import UNet, count_parameters

__all__ = ["TimestepEmbedder", "timestep_embedding", "TimeMLP", "UNet", "count_parameters", "ConvNet", "ResNet",
           "make_encoder", "resnet18", "DiT", "DiTConfig", "dit_config", "dit_flops", "AutoencoderKL"]
