"""Import the reference code's exported encoder (`*_encoder.pt`, MONAI BasicUNet names).

The file is a dict `{"config": {...}, "state_dict": {...}}`; it is read with
`torch.load(weights_only=True)`, which refuses arbitrary pickled objects. MONAI's BasicUNet names map to
ours as: `conv_0.conv_{j}.conv.*` → `stages.0.block{j+1}.conv.*` and
`down_{i}.convs.conv_{j}.conv.*` → `stages.{i}.block{j+1}.conv.*`. Decoder keys of a full BasicUNet
(`upcat_*`, `final_conv.*`) are skipped; anything else is an error.
"""

from __future__ import annotations

import re
from pathlib import Path

from seqinv.errors import WeightsError
from seqinv.models.config import PRESETS, ModelConfig
from seqinv.models.weights import load_strict

_ENCODER_KEY = re.compile(r"^(?:conv_0|down_(?P<stage>[1-4])\.convs)\.conv_(?P<conv>[01])\.(?P<rest>.+)$")
_DECODER_KEY = re.compile(r"^(upcat_[1-4]|final_conv)\.")
_NORM_KEY = re.compile(r"\.adn\.N\.(weight|bias)$")
_PREFIXES = ("module.", "model.", "encoder.", "unet.", "net.")


def map_reference_key(key: str) -> str | None:
    """Our name for a BasicUNet encoder key; None for decoder keys."""
    if _DECODER_KEY.match(key):
        return None
    match = _ENCODER_KEY.match(key)
    if match is None or not match["rest"].startswith("conv."):
        raise WeightsError(
            f"reference weights: cannot map key {key!r}; expected MONAI BasicUNet encoder names"
        )
    stage = int(match["stage"] or 0)
    return f"stages.{stage}.block{int(match['conv']) + 1}.{match['rest']}"


def _strip_prefix(state: dict) -> dict:
    for prefix in _PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            return _strip_prefix({key[len(prefix) :]: value for key, value in state.items()})
    return state


def _drop_identity_norms(state: dict) -> dict:
    """Instance-norm affine parameters must be the identity: our norms have no affine."""
    import torch

    out = {}
    for key, value in state.items():
        if _NORM_KEY.search(key):
            identity = torch.ones_like(value) if key.endswith("weight") else torch.zeros_like(value)
            if not torch.equal(value, identity):
                raise WeightsError(
                    f"reference weights: {key} is a trained norm affine; seqinv's encoder uses instance "
                    "norm without affine (arXiv 2501.12057), so these weights cannot be loaded exactly"
                )
            continue
        out[key] = value
    return out


def load_reference_encoder(path: str | Path, name: str = ""):
    """A `SeqInvEncoder` holding the weights of a reference `*_encoder.pt` (widths read from the tensors)."""
    import torch

    from seqinv.models.networks import SeqInvEncoder

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"reference encoder file {path} not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError or EOFError here
        raise WeightsError(
            f"{path} is not a weights-only torch file ({type(err).__name__}: {str(err).splitlines()[0]})"
        ) from err
    if isinstance(payload, dict) and "state_dict" in payload:
        state, config = payload["state_dict"], payload.get("config") or {}
    elif isinstance(payload, dict) and all(isinstance(v, torch.Tensor) for v in payload.values()):
        state, config = payload, {}
    else:
        raise WeightsError(f"{path}: expected a dict with 'config' and 'state_dict' (the reference export)")
    state = _drop_identity_norms(_strip_prefix(dict(state)))
    mapped = {}
    for key, value in state.items():
        ours = map_reference_key(key)
        if ours is not None:
            mapped[ours] = value
    try:
        features = tuple(int(mapped[f"stages.{i}.block1.conv.weight"].shape[0]) for i in range(5))
        in_channels = int(mapped["stages.0.block1.conv.weight"].shape[1])
    except KeyError as err:
        raise WeightsError(f"{path}: missing encoder weight {err.args[0]} (our name)") from err
    preset = next((p for p, (f, _) in PRESETS.items() if f == features), "custom")
    dropout = float(config.get("dropout", 0.2)) if isinstance(config, dict) else 0.2
    model_config = ModelConfig(
        arch="encoder",
        preset=preset,
        features=features,
        in_channels=in_channels,
        dropout=dropout,
        name=name or path.stem,
        training={"source": "reference export", "file": path.name},
    )
    model = SeqInvEncoder(model_config)
    load_strict(model, mapped, str(path))
    return model.eval()
