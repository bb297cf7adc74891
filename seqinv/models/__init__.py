"""SeqInv networks, weight files in the Hub layout, and the registry of published models."""

from seqinv.models.config import FORMAT_VERSION, PRESETS, ModelConfig
from seqinv.models.heads import Projector, Reconstructor
from seqinv.models.networks import SeqInvEncoder, SeqInvUNet
from seqinv.models.reference import load_reference_encoder
from seqinv.models.registry import PUBLISHED, ModelSource, bundle_model, load_model, resolve

__all__ = [
    "FORMAT_VERSION",
    "PRESETS",
    "PUBLISHED",
    "ModelConfig",
    "ModelSource",
    "Projector",
    "Reconstructor",
    "SeqInvEncoder",
    "SeqInvUNet",
    "bundle_model",
    "load_model",
    "load_reference_encoder",
    "resolve",
]
