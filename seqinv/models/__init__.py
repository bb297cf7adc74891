"""SeqInv networks and their weights, as one chain (each module imports only those above it):

catalogue (published versions, pure data) -> weights (model folders: read, write, strict load, hash)
-> sources (local folder, bundled copy, Hub, cache) -> hub (the save/load mixin) -> networks -> factory.
"""

from seqinv.models.catalogue import CATALOGUE, PublishedModel, resolve
from seqinv.models.config import FORMAT_VERSION, PRESETS, ModelConfig
from seqinv.models.factory import build_from_folder, load_model
from seqinv.models.heads import Projector, Reconstructor
from seqinv.models.networks import SeqInvEncoder, SeqInvUNet
from seqinv.models.reference import load_reference_encoder
from seqinv.models.sources import ModelSource

__all__ = [
    "CATALOGUE",
    "FORMAT_VERSION",
    "PRESETS",
    "ModelConfig",
    "ModelSource",
    "Projector",
    "PublishedModel",
    "Reconstructor",
    "SeqInvEncoder",
    "SeqInvUNet",
    "build_from_folder",
    "load_model",
    "load_reference_encoder",
    "resolve",
]
