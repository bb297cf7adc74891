"""`seqinv simulate`: MRI contrasts from qMRI maps (a folder or the built-in phantom)."""

from __future__ import annotations

from pathlib import Path

import typer

from seqinv.errors import ParameterError

MAX_RANDOM = 10_000
_NIFTI = (".nii", ".nii.gz")
# CLI option → sequence field, per sequence family (MP2RAGE: --ti/--flip set the first readout).
_FIELDS = {"tr": "tr_s", "te": "te_s", "ti": "ti_s", "flip": "flip_deg"}
_MP2RAGE_FIELDS = {"tr": "tr_s", "te": "te_s", "ti": "ti1_s", "flip": "flip1_deg"}


def _parse_set(items: list[str]) -> dict[str, float]:
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            params[key.strip()] = float(value)
        except ValueError:
            raise ParameterError(f"--set {item!r}: expected KEY=NUMBER, e.g. --set n_exc=160") from None
    return params


def _single_sequence(name: str, options: dict[str, float | None], extra: dict[str, float]):
    import dataclasses

    from seqinv.physics.sequences import make_sequence, sequence_class

    cls = sequence_class(name)
    fields = {f.name for f in dataclasses.fields(cls)}
    mapping = _MP2RAGE_FIELDS if cls.name == "mp2rage" else _FIELDS
    params = dict(extra)
    for option, value in options.items():
        if value is None:
            continue
        if mapping[option] not in fields:
            raise ParameterError(
                f"--{option} does not apply to {cls.name}; its parameters: {', '.join(sorted(fields))}"
            )
        params[mapping[option]] = value
    return make_sequence(cls.name, **params)


def _outputs(output: Path, sequences, random: int) -> list[Path]:
    names = [s.name if s is not None else "random" for s in sequences]
    is_file = output.name.lower().endswith(_NIFTI)
    if random:
        if is_file or output.is_file():
            raise ParameterError(f"-o {output}: with --random, -o is a folder for the {random} outputs")
        return [output / f"sim_{i:03d}_{n}.nii.gz" for i, n in enumerate(names)]
    if output.is_dir() or not is_file:
        return [output / f"{names[0]}.nii.gz"]
    return [output]


def _sidecar(path: Path) -> Path:
    name = path.name[: -len(".nii.gz")] if path.name.lower().endswith(".nii.gz") else path.stem
    return path.with_name(name + ".json")


def _write_json(path: Path, record: dict) -> None:
    import json

    from seqinv.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def register(app: typer.Typer) -> None:
    @app.command("simulate")
    def simulate_command(
        maps_dir: Path = typer.Argument(
            None, help="Folder with PD, R1, R2s, MT (optional R2) NIfTI maps, or hMRI-toolbox names."
        ),
        output: Path = typer.Option(..., "-o", "--output", help="Output .nii.gz (or folder with --random)."),
        sequence: str = typer.Option(
            None, "--sequence", "-s", help="mprage | gre | spgr | fse | flair | mp2rage."
        ),
        tr: float = typer.Option(None, "--tr", help="Repetition time TR in seconds."),
        te: float = typer.Option(None, "--te", help="Echo time TE in seconds."),
        ti: float = typer.Option(None, "--ti", help="Inversion time TI in seconds (MP2RAGE: TI1)."),
        flip: float = typer.Option(None, "--flip", help="Flip angle in degrees (MP2RAGE: first readout)."),
        set_: list[str] = typer.Option(
            [], "--set", help="Other parameter KEY=VALUE (e.g. n_exc=160, esp_s=0.007, ti2_s=2.5)."
        ),
        random: int = typer.Option(
            0, "--random", help="Draw N random protocols from the training priors (-o is then a folder)."
        ),
        phantom: bool = typer.Option(
            False,
            "--phantom",
            help="Use a built-in whole-head phantom: by default from the SynthSeg label map shipped with "
            "seqinv (head, face and neck); see --label-map.",
        ),
        seed: int = typer.Option(0, "--seed", help="Phantom seed and random-protocol seed."),
        clean: bool = typer.Option(
            False, "--clean", help="Set NaN voxels to 0 and clip negative map values."
        ),
        label_map: str = typer.Option(
            None,
            "--label-map",
            help="With --phantom: the label map of the head (default 'bundled', SynthSeg's map 1 shipped "
            "with seqinv; a number 1-18 of --label-maps, 17 and 18 being test maps; a file; or 'icbm' for "
            "the ICBM152 template phantom). Also writes phantom_labels.nii.gz.",
        ),
        label_maps: str = typer.Option(
            None, "--label-maps", help="Folder of training_seg_01..18.nii.gz (default $SEQINV_LABEL_MAPS)."
        ),
        contrast: str = typer.Option(
            "physics", "--contrast", help="physics (sequences) or random (random intensity per tissue)."
        ),
        slice_mm: float = typer.Option(0.0, "--slice-mm", help="Slice thickness in mm (0: 1 mm 3D)."),
        slice_axis: str = typer.Option("z", "--slice-axis", help="Slice axis: x|y|z (sag|cor|ax)."),
        gap_mm: float = typer.Option(0.0, "--gap-mm", help="Gap between slices in mm."),
        inplane_mm: float = typer.Option(1.0, "--inplane-mm", help="In-plane resolution in mm (0.6-1.5)."),
        profile: str = typer.Option("gaussian", "--profile", help="Slice profile: gaussian or box."),
    ) -> None:
        """Simulate MRI contrasts (physical signal, receive gain 1) with a JSON sidecar of the parameters."""
        if phantom == (maps_dir is not None):
            raise ParameterError("give either MAPS_DIR or --phantom (exactly one)")
        from seqinv.commands.simulate_head import CONTRASTS, acquisition_from_options

        if contrast not in CONTRASTS:
            raise ParameterError(f"--contrast {contrast!r} is not one of {', '.join(CONTRASTS)}")
        if label_map is not None and not phantom:
            raise ParameterError("--label-map builds a phantom: use it with --phantom, not MAPS_DIR")
        if phantom and label_map is None:
            label_map = "bundled"
        if contrast == "random" and label_map in (None, "icbm"):
            raise ParameterError(
                "--contrast random needs a label map: use --phantom (not 'icbm' or MAPS_DIR)"
            )
        acquisition = acquisition_from_options(slice_mm, slice_axis, gap_mm, inplane_mm, profile)
        if not 0 <= random <= MAX_RANDOM:
            raise ParameterError(f"--random {random} is outside [0, {MAX_RANDOM}]")
        import torch

        from seqinv import __version__
        from seqinv.physics import simulate
        from seqinv.physics.priors import draw_sequence

        if contrast == "random":
            sequences = [None] * max(1, random)
        elif random:
            if any(v is not None for v in (tr, te, ti, flip)) or set_:
                raise ParameterError("--random draws every parameter; drop --tr/--te/--ti/--flip/--set")
            generator = torch.Generator().manual_seed(seed)
            kinds = None if sequence is None else [sequence.lower()]
            sequences = [draw_sequence(generator, kinds=kinds) for _ in range(random)]
        else:
            if sequence is None:
                raise ParameterError(
                    "choose a --sequence (mprage, gre, spgr, fse, flair, mp2rage) or --random N"
                )
            options = {"tr": tr, "te": te, "ti": ti, "flip": flip}
            sequences = [_single_sequence(sequence, options, _parse_set(set_))]
        targets = _outputs(output, sequences, random)

        head = None
        if label_map == "icbm":
            from seqinv.physics.phantom import make_phantom

            maps, source = make_phantom(seed).maps, {"phantom_seed": seed}
        elif label_map is not None:
            from seqinv.commands.simulate_head import head_phantom

            head, source = head_phantom(label_map, label_maps, seed)
            maps = head.maps
        else:
            from seqinv.physics.maps_io import load_maps

            maps, source = load_maps(maps_dir, clean=clean), {"maps_dir": str(Path(maps_dir).resolve())}

        from seqinv.io import write_volume

        targets[0].parent.mkdir(parents=True, exist_ok=True)
        with torch.no_grad():
            for i, (seq, target) in enumerate(zip(sequences, targets, strict=True)):
                if seq is None:
                    from seqinv.commands.simulate_head import random_contrast_image

                    image = random_contrast_image(head, seed * 10_007 + i)
                else:
                    image = simulate(maps, seq)
                if acquisition is not None:
                    from seqinv.physics.acquisition import acquire

                    image = acquire(image.float(), acquisition)
                write_volume(target, image.numpy(), maps.affine, dtype="float32")
                record = {
                    "sequence": seq.to_dict() if seq is not None else {"contrast": "random"},
                    "acquisition": None if acquisition is None else acquisition.to_dict(),
                    "source": source,
                    "receive": 1.0,
                    "units": {
                        "times": "s",
                        "angles": "deg",
                        "image": "PD p.u. x relative signal (no rescaling)",
                    },
                    "random_seed": seed if random else None,
                    "seqinv_version": __version__,
                }
                _write_json(_sidecar(target), record)
                typer.echo(f"{target}  {record['sequence']}")
        if head is not None:
            from seqinv.commands.simulate_head import write_labels

            typer.echo(f"labels: {write_labels(targets[0].parent, head)}")
