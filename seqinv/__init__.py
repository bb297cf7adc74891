"""seqinv: sequence-invariant 3D brain MRI models.

Heavy imports (torch, monai) happen lazily so `seqinv --help` stays fast.
"""


def _package_version() -> str:
    """The installed distribution's version (pyproject.toml's, set at release); a fallback when seqinv
    runs from a source tree that was never installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("seqinv")
    except PackageNotFoundError:
        return "0.0.0+unknown"


__version__ = _package_version()

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
