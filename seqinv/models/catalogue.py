"""The published seqinv models, one entry per model version: pure data, no I/O.

Each version pins its content, the sha256 of its model.safetensors and of its config.json (labels,
spacing, normalisation: two versions may share weights and differ only there, as denoise 2.2 and 2.3
do), and the Hub revision it was published at (a tag, and the commit where recorded: tags can move).
So a newer model pushed to the repo, or a tag moved, never changes what an installed seqinv loads.
`ixi` is the newest version; `ixi@1.0` names one version. The wheel bundles the newest version of each
name (`seqinv/weights/<name>/`, loaded with no network); every older version comes from the Hub at its
pinned revision (the repository keeps the published files in `hub/<name>@<version>/`, see hub/README.md).
CHANGELOG.md says what each version changed.

To publish a version (docs/models.md, "Publishing a new default", has every step): move the previous
default's folder to `hub/<name>@<version>/`, `python -m training.bundle EXPORT_DIR NAME` bundles the new
weights and prints the sha256, `push_to_hub` returns the commit to pin (or tag it); add the entry here with
the sha256 of the bundled config.json too, and a CHANGELOG.md line. Which version is bundled follows from
the versions: the newest.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass

HUB_ORG = "seqinv"


@dataclass(frozen=True)
class PublishedModel:
    """One published version. `kind` is "encoder" (a SeqInvEncoder) or "task" (a SeqInvUNet).

    `task` is its entry in seqinv/tasks.py; `sha256` and `config_sha256` the hashes of model.safetensors
    and config.json as published (None: unchecked); `bundled` whether this version ships in the wheel
    (the newest version of each name; set by `_bundle_newest`).
    `revision` is the tag it was published at; tags can be moved, so `commit`, where recorded, is what
    the Hub is asked for.
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
    config_sha256: str | None = None
    commit: str | None = None

    @property
    def ref(self) -> str:
        """`name@version`, e.g. `ixi@1.0`."""
        return f"{self.name}@{self.version}"

    @property
    def hub_revision(self) -> str:
        """What to ask the Hub for: the pinned commit, else the tag."""
        return self.commit or self.revision

    def pins(self, revision: str | None) -> bool:
        """Whether loading at `revision` (None: the default) is this published version."""
        return revision in (None, self.revision, self.commit)


def _published(
    name: str,
    version: str,
    kind: str,
    task: str,
    repo: str,
    description: str,
    *,
    sha256: str,
    config_sha256: str,
) -> PublishedModel:
    """A version published at tag `v<version>` (bundled or not: see `_bundle_newest`)."""
    repo_id, tag = f"{HUB_ORG}/{repo}", f"v{version}"
    return PublishedModel(name, version, kind, task, repo_id, tag, sha256, description, False, config_sha256)


def _version_key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in version.split("."))


def _bundle_newest(entries: list[PublishedModel]) -> list[PublishedModel]:
    """`entries` with `bundled` set on the newest version of each name, and on no other."""
    newest: dict[str, PublishedModel] = {}
    for entry in entries:
        if entry.name not in newest or _version_key(entry.version) > _version_key(newest[entry.name].version):
            newest[entry.name] = entry
    return [dataclasses.replace(e, bundled=newest[e.name] is e) for e in entries]


_VERSIONS: list[PublishedModel] = [
    _published(
        "seqinv",
        "1.0",
        "encoder",
        "features",
        "seqinv-lite-encoder",
        "SeqInv encoder: two different simulated sequences per pair",
        sha256="df7eb633fea99f98a5da29d2c7a2395ad7982b07ee9e4259e83d6512fc18339b",
        config_sha256="0308888ef0b66603064ab56d0f28f5bbdb40d9aeff8ebf12ad732204aaff7cac",
    ),
    _published(
        "seqaug",
        "1.0",
        "encoder",
        "features",
        "seqaug-lite-encoder",
        "SeqAug encoder: one random sequence per pair",
        sha256="fdf4513434b54d4337fab3297fcb789e7ff5e1c479ee6d1fe95ab9ff0d8308da",
        config_sha256="0ecf8e7a6b82eb6fc1949821e269c6aad06593514e24490bbdffef3d4aafd51a",
    ),
    _published(
        "base",
        "1.0",
        "encoder",
        "features",
        "base-lite-encoder",
        "Base encoder: MPRAGE-like views only",
        sha256="318b6d01b6927b6fbeae0ab21ec32b18fc66258809686248e44e4dc35ec194d1",
        config_sha256="a80fba60be6d2a233ee50841465c881e1373ea976c375f946031ec68844d98d7",
    ),
    _published(
        "ixi",
        "1.0",
        "task",
        "ixi",
        "seqinv-lite-ixi",
        "tissue segmentation (background, CSF, GM, WM), any contrast",
        sha256="d8001e3167b5357feb4f714493cf46287024f09d897be8e5ef5ef7f11575d809",
        config_sha256="81bfc35a68a579adf74da2ace451832926e4db91f140c331a5ee67213e5c1495",
    ),
    _published(
        "arc",
        "1.0",
        "task",
        "arc",
        "seqinv-lite-arc",
        "stroke lesion segmentation (background, lesion); research only",
        sha256="94f025a573aacbd7942e9d8e6c25adbc28b4d3398f9955bfd3985b045f1c00a4",
        config_sha256="762e8790fb2772d2171fa650e7c832b0b23a3ba1d5cb13f3dd2b498de705ef8c",
    ),
    _published(
        "denoise",
        "1.0",
        "task",
        "denoise",
        "seqinv-lite-denoise",
        "research: the paper's frozen-encoder denoising head (1 mm RAS; what `seqinv evaluate` compares)",
        sha256="8cd8fe5783de02334faeb892c5aff70bca76d5ab952b17c8ec05df7f33aed3a1",
        config_sha256="b23f849c001cfa55b764769d326214321c69ed9b5be833963f6f0f2165444931",
    ),
    _published(
        "ixi",
        "1.1",
        "task",
        "ixi",
        "seqinv-lite-ixi",
        "tissue segmentation (background, CSF, GM, WM), any contrast: 1.0 trained on whole-head phantoms",
        sha256="a2b43b8f093bf7739646267a85304bbea5b322585bf516f8bd6734d3f4216183",
        config_sha256="4ca4cf6e83596c6050ff29cd9f69b216c7c71f4d0b00ec896f87913a9594be80",
    ),
    _published(
        "ixi",
        "1.2",
        "task",
        "ixi",
        "seqinv-lite-ixi",
        "tissue segmentation (background, CSF, GM, WM), any contrast: 1.1 trained 6000 steps more",
        sha256="f8d112298f17cabb9854056ba5fc8be8a8bf222c1eab6918b1e7f0ce6789b979",
        config_sha256="01191a8f17b18ef4e9c861c06c828301f1200e4559aa6c84e2050be124e35b8d",
    ),
    _published(
        "ixi",
        "2.0",
        "task",
        "ixi",
        "seqinv-lite-ixi",
        "tissue segmentation (background, CSF, GM, WM), any contrast or resolution: trained on the "
        "SynthSeg-grade generator",
        sha256="d90859c6f17564ed62528db67fffbb62cbd42bd4bdad31e212e63450e70e249e",
        config_sha256="26adc6058be3273ac8e8dbd734478261dba443ca43b2f6f896a423629265abda",
    ),
    _published(
        "arc",
        "1.1",
        "task",
        "arc",
        "seqinv-lite-arc",
        "stroke lesion segmentation (background, lesion); research only: ixi 1.2 on lesion head phantoms",
        sha256="d17bcee75ecd4618054e70ce1f492188f15b402a1d85a1e383024a4f51bfc819",
        config_sha256="7f1315d367a9eced6233f95114d2bc8ee3d7173296513f7f94dd384ab1d17ffa",
    ),
    _published(
        "denoise",
        "2.0",
        "task",
        "denoise",
        "seqinv-lite-denoise",
        "denoising on the input's own grid: residual CNN at half resolution, noise level as input",
        sha256="ee18d25bd2d66fdcfdd371f992a457678d879d65e8bed6b47c00650f0cf2473e",
        config_sha256="ffe20e588a50641b3a6489fa3eaa5e10ae0536244aa2954501ad7c98f96d6648",
    ),
    _published(
        "denoise",
        "2.1",
        "task",
        "denoise",
        "seqinv-lite-denoise",
        "denoising on the input's own grid: 2.0 trained further, with whole-head phantoms added",
        sha256="07a9c38f24d2fc1cffd210e1d2e29f0533fafd9c24394850def850f9c1c49c88",
        config_sha256="3b9873d4d198b4e0ef3523104f34b8e7628f763bcd8a1f48408de9e6bdde37e7",
    ),
    _published(
        "denoise",
        "2.2",
        "task",
        "denoise",
        "seqinv-lite-denoise",
        "denoising on the input's own grid: 2.1 trained 17000 steps more, two flipped passes by default",
        sha256="db253d7bbbc1ed04fe5fca333413bba514b44d3391970f155ad568bfe4b7b4bc",
        config_sha256="31f7205012ad898fe31f3ae5f75955db19a142da18740658b9ff782011fe78d3",
    ),
    _published(
        "denoise",
        "2.3",
        "task",
        "denoise",
        "seqinv-lite-denoise",
        "denoising on the input's own grid: 2.2's network, then non-local averaging guided by its estimate",
        sha256="db253d7bbbc1ed04fe5fca333413bba514b44d3391970f155ad568bfe4b7b4bc",
        config_sha256="66743b34508b30b7ea6327f995483e91484a2f97c73dad2fd4918cfe8949adb0",
    ),
]
#: Every published version, the newest of each name marked `bundled`.
CATALOGUE: list[PublishedModel] = _bundle_newest(_VERSIONS)


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
