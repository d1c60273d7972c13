"""Networks: time-conditioned MLP for 2-D toys, a diffusion U-Net, a Diffusion Transformer (DiT), ResNet encoders,
an autoencoder for latent diffusion and a CLIP in miniature (:mod:`minidiff.nets.clip`)."""

from .autoencoder import AutoencoderKL
from .classifier import NoisyClassifier
from .clip import CLIPModel
from .dit import DiT, DiTConfig, dit_config, dit_flops
from .embeddings import TimestepEmbedder, timestep_embedding
from .mlp import ImageMLP, TimeMLP
from .resnet import ConvNet, ResNet, make_encoder, resnet18
from .unet import UNET_CONFIGS, UNet, count_flops, count_parameters, unet_config

__all__ = ["TimestepEmbedder", "timestep_embedding", "TimeMLP", "ImageMLP", "UNet", "UNET_CONFIGS", "unet_config", "count_parameters", "count_flops", "ConvNet", "ResNet",
           "make_encoder", "resnet18", "DiT", "DiTConfig", "dit_config", "dit_flops", "AutoencoderKL",
           "CLIPModel", "NoisyClassifier"]
