"""qMRI → MRI signal physics: maps, sequence dataclasses, closed-form signal equations, noise.

Submodules `priors` (training protocol priors), `phantom` (ICBM152 head phantoms), `anatomy` (whole-head
phantoms from SynthSeg label maps), `acquisition` (thick slices, coverage, gamma) and `maps_io` (reading
qMRI folders) are imported on demand.
"""

from seqinv.physics.maps import R2_FROM_R2S_RATIO, QMRIMaps
from seqinv.physics.sequences import (
    FLAIR,
    FSE,
    GRE,
    MP2RAGE,
    MPRAGE,
    SEQUENCES,
    SPGR,
    TYPICAL,
    make_sequence,
    sequence_from_dict,
)
from seqinv.physics.signal import rician, simulate

__all__ = [
    "FLAIR",
    "FSE",
    "GRE",
    "MP2RAGE",
    "MPRAGE",
    "R2_FROM_R2S_RATIO",
    "SEQUENCES",
    "SPGR",
    "TYPICAL",
    "QMRIMaps",
    "make_sequence",
    "rician",
    "sequence_from_dict",
    "simulate",
]
