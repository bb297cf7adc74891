"""The published seqinv models, one entry per model version: pure data, no I/O.

Each version pins the Hub revision (a tag or commit) its files were published at and the sha256 of its
model.safetensors, so a newer model pushed to the repo's `main` never changes what an installed seqinv
loads. `ixi` is the newest version; `ixi@1.0` names one version. The copy bundled in the wheel
(`seqinv/weights/<name>/`) is the newest version of each name; an older version still shipped lives in
`seqinv/weights/<name>@<version>/` (`denoise@1.0`). CHANGELOG.md says what each version changed.

To publish a version: `python -m training.bundle EXPORT_DIR NAME` bundles the weights and prints the
sha256, `push_to_hub` returns the commit to pin (or tag it); add the entry here and a CHANGELOG.md line.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

HUB_ORG = "seqinv"


@dataclass(frozen=True)
class PublishedModel:
    """One published version. `kind` is "encoder" (a SeqInvEncoder) or "task" (a SeqInvUNet).

    `task` is its entry in seqinv/tasks.py; `sha256` the hash of model.safetensors at `revision`
    (None: unchecked); `bundled` whether this version ships in the wheel.
    """

    name: str
    version: str
    kind: str
    task: str
    repo_id: str
    revision: str
    sha256: str | None
    description: str
    bundled: bool = False

    @property
    def ref(self) -> str:
        """`name@version`, e.g. `ixi@1.0`."""
        return f"{self.name}@{self.version}"


def _v1(name: str, kind: str, task: str, repo: str, sha256: str, description: str) -> PublishedModel:
    return PublishedModel(name, "1.0", kind, task, f"{HUB_ORG}/{repo}", "v1.0", sha256, description, True)


CATALOGUE: list[PublishedModel] = [
    _v1(
        "seqinv",
        "encoder",
        "features",
        "seqinv-lite-encoder",
        "df7eb633fea99f98a5da29d2c7a2395ad7982b07ee9e4259e83d6512fc18339b",
        "SeqInv encoder: two different simulated sequences per pair",
    ),
    _v1(
        "seqaug",
        "encoder",
        "features",
        "seqaug-lite-encoder",
        "fdf4513434b54d4337fab3297fcb789e7ff5e1c479ee6d1fe95ab9ff0d8308da",
        "SeqAug encoder: one random sequence per pair",
    ),
    _v1(
        "base",
        "encoder",
        "features",
        "base-lite-encoder",
        "318b6d01b6927b6fbeae0ab21ec32b18fc66258809686248e44e4dc35ec194d1",
        "Base encoder: MPRAGE-like views only",
    ),
    _v1(
        "ixi",
        "task",
        "ixi",
        "seqinv-lite-ixi",
        "d8001e3167b5357feb4f714493cf46287024f09d897be8e5ef5ef7f11575d809",
        "tissue segmentation (background, CSF, GM, WM), any contrast",
    ),
    _v1(
        "arc",
        "task",
        "arc",
        "seqinv-lite-arc",
        "94f025a573aacbd7942e9d8e6c25adbc28b4d3398f9955bfd3985b045f1c00a4",
        "stroke lesion segmentation (background, lesion); research only",
    ),
    _v1(
        "denoise",
        "task",
        "denoise",
        "seqinv-lite-denoise",
        "8cd8fe5783de02334faeb892c5aff70bca76d5ab952b17c8ec05df7f33aed3a1",
        "research: the paper's frozen-encoder denoising head (1 mm RAS; what `seqinv evaluate` compares)",
    ),
    PublishedModel(
        "ixi",
        "1.1",
        "task",
        "ixi",
        f"{HUB_ORG}/seqinv-lite-ixi",
        "v1.1",
        "a2b43b8f093bf7739646267a85304bbea5b322585bf516f8bd6734d3f4216183",
        "tissue segmentation (background, CSF, GM, WM), any contrast: 1.0 trained on whole-head phantoms",
        True,
    ),
    PublishedModel(
        "ixi",
        "1.2",
        "task",
        "ixi",
        f"{HUB_ORG}/seqinv-lite-ixi",
        "v1.2",
        "f8d112298f17cabb9854056ba5fc8be8a8bf222c1eab6918b1e7f0ce6789b979",
        "tissue segmentation (background, CSF, GM, WM), any contrast: 1.1 trained 6000 steps more",
        True,
    ),
    PublishedModel(
        "arc",
        "1.1",
        "task",
        "arc",
        f"{HUB_ORG}/seqinv-lite-arc",
        "v1.1",
        "d17bcee75ecd4618054e70ce1f492188f15b402a1d85a1e383024a4f51bfc819",
        "stroke lesion segmentation (background, lesion); research only: ixi 1.2 on lesion head phantoms",
        True,
    ),
    PublishedModel(
        "denoise",
        "2.0",
        "task",
        "denoise",
        f"{HUB_ORG}/seqinv-lite-denoise",
        "v2.0",
        "ee18d25bd2d66fdcfdd371f992a457678d879d65e8bed6b47c00650f0cf2473e",
        "denoising on the input's own grid: residual CNN at half resolution, noise level as input",
        True,
    ),
    PublishedModel(
        "denoise",
        "2.1",
        "task",
        "denoise",
        f"{HUB_ORG}/seqinv-lite-denoise",
        "v2.1",
        "07a9c38f24d2fc1cffd210e1d2e29f0533fafd9c24394850def850f9c1c49c88",
        "denoising on the input's own grid: 2.0 trained further, with whole-head phantoms added",
        True,
    ),
    PublishedModel(
        "denoise",
        "2.2",
        "task",
        "denoise",
        f"{HUB_ORG}/seqinv-lite-denoise",
        "v2.2",
        "db253d7bbbc1ed04fe5fca333413bba514b44d3391970f155ad568bfe4b7b4bc",
        "denoising on the input's own grid: 2.1 trained 17000 steps more, two flipped passes by default",
        True,
    ),
    PublishedModel(
        "denoise",
        "2.3",
        "task",
        "denoise",
        f"{HUB_ORG}/seqinv-lite-denoise",
        "v2.3",
        "db253d7bbbc1ed04fe5fca333413bba514b44d3391970f155ad568bfe4b7b4bc",
        "denoising on the input's own grid: 2.2's network, then non-local averaging guided by its estimate",
        True,
    ),
]


def _version_key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in version.split("."))


def names() -> list[str]:
    """Published model names, in catalogue order."""
    return list(dict.fromkeys(m.name for m in CATALOGUE))


def versions(name: str) -> list[PublishedModel]:
    """Every version of `name`, oldest first."""
    return sorted((m for m in CATALOGUE if m.name == name), key=lambda m: _version_key(m.version))


def latest() -> dict[str, PublishedModel]:
    """name -> its newest version (what a bare name loads)."""
    return {name: versions(name)[-1] for name in names()}


def split_ref(text: str) -> tuple[str, str | None]:
    """`ixi@1.0` -> ("ixi", "1.0"); `ixi` -> ("ixi", None). Names are case-insensitive."""
    name, _, version = text.partition("@")
    return name.lower(), version or None


def is_published(text: str) -> bool:
    """True for a catalogue name, with or without `@version` (the version need not exist)."""
    return "/" not in text and split_ref(text)[0] in names()


def resolve(text: str) -> PublishedModel:
    """The catalogue entry for `name` or `name@version`; unknown ones get a "did you mean"."""
    from seqinv.errors import WeightsError

    name, version = split_ref(text)
    if name not in names():
        raise WeightsError(unknown_name_message(text))
    found = versions(name)
    if version is None:
        return found[-1]
    for entry in found:
        if entry.version == version:
            return entry
    raise WeightsError(
        f"model {name!r} has no version {version!r}; published versions: "
        f"{', '.join(e.version for e in found)} (see `seqinv models list`)"
    )


def unknown_name_message(text: str) -> str:
    close = difflib.get_close_matches(split_ref(text)[0], names(), n=2, cutoff=0.5)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    return (
        f"unknown model {text!r}; {hint}published models: {', '.join(names())} (see `seqinv models list`), "
        "or give a local model folder or a Hub repo id like org/name"
    )
