"""seqinv: sequence-invariant 3D brain MRI models.

Heavy imports (torch, monai) happen lazily so `seqinv --help` stays fast.
"""

__version__ = "0.1.0"

_LAZY = {
    "SeqInvEncoder": "seqinv.models",
    "SeqInvUNet": "seqinv.models",
    "QMRIMaps": "seqinv.physics",
    "simulate": "seqinv.physics",
    "segment": "seqinv.inference",
    "denoise": "seqinv.inference",
    "embed": "seqinv.inference",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'seqinv' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
