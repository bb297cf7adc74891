"""SeqInv networks, weight files in the Hub layout, and the registry of published models."""

from seqinv.models.config import FORMAT_VERSION, PRESETS, ModelConfig
from seqinv.models.heads import Projector, Reconstructor
from seqinv.models.networks import SeqInvEncoder, SeqInvUNet

__all__ = [
    "FORMAT_VERSION",
    "PRESETS",
    "ModelConfig",
    "Projector",
    "Reconstructor",
    "SeqInvEncoder",
    "SeqInvUNet",
]
