"""`seqinv train export`, `seqinv train replay` and `seqinv evaluate` (heavy imports inside the bodies)."""

from __future__ import annotations

import typer

from seqinv.tasks import BRAIN_TASK, TASKS


def export_command(
    checkpoint: str = typer.Argument(..., help="A checkpoint (step_*.pt) or a training output folder."),
    output: str = typer.Option(..., "--output", help="Folder to write the Hub layout to."),
    metrics: str = typer.Option("", "--metrics", help="summary.csv written by `seqinv evaluate`."),
    model_label: str = typer.Option("", "--metrics-model", help="Model label in that CSV (default: name)."),
    name: str = typer.Option("", "--name", help="Model name stored in config.json."),
) -> None:
    """Export a checkpoint as config.json + model.safetensors + model card (ready for push_to_hub)."""
    from training.export import export

    folder = export(checkpoint, output, metrics or None, model_label, name)
    typer.echo(f"exported to {folder}")


def replay_command(
    recipe: str = typer.Argument(..., help="A recipe of ordered stages, e.g. training/recipes/ixi.toml."),
    runs: str = typer.Option("runs", "--runs", help="Folder receiving one sub-folder per stage."),
    until: str = typer.Option(None, "--until", help="Stop after this stage."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the stages' commands, run nothing."),
) -> None:
    """Replay the training stages that made a published model, in order (finished stages are kept)."""
    from training.options import require_train_extra
    from training.recipe import replay

    if not dry_run:
        require_train_extra()
    replay(recipe, runs, until=until, dry_run=dry_run, echo=typer.echo)


def evaluate_command(
    model: list[str] = typer.Option(
        None, "--model", help="LABEL=FOLDER of a fine-tuned model; repeat, in column order."
    ),
    output: str = typer.Option(..., "--output", help="Folder for metrics.csv, summary.csv and results.md."),
    real: str = typer.Option(
        "",
        "--real",
        help="Folder of the real-scan yardstick (benchmarks/eval_real.py); --model: a tissue and/or a "
        "denoising model (default: ixi and denoise); needs the bench extra.",
    ),
    cache_dir: str = typer.Option(
        "", "--cache-dir", help="--real: reference cache (~/.cache/seqinv/real-bench)."
    ),
    phantom: bool = typer.Option(False, "--phantom", help="Held-out phantom with four fixed protocols."),
    data: str = typer.Option("", "--data", help="IXI-style or BIDS-style ARC test folder instead."),
    sigma: float = typer.Option(0.2, "--sigma", help="Denoising evaluation noise (z-scored units)."),
    crop: int = typer.Option(
        0, "--crop", help="Phantom: evaluate a central crop of N³ voxels (0: whole head)."
    ),
    brain_model: str = typer.Option(
        TASKS[BRAIN_TASK].default_model,
        "--brain-model",
        help="Lesion models: tissue model whose brain bounds the lesion calls, as in `seqinv segment "
        "--task arc` ('none': no mask).",
    ),
    label_maps: str = typer.Option(
        "",
        "--label-maps",
        help="--phantom: also the held-out whole-head phantoms (SynthSeg maps 17, 18: 1 mm, thick-slice and "
        "random contrast) from this folder (default $SEQINV_LABEL_MAPS; neither: ICBM phantom only).",
    ),
) -> None:
    """Dice, HD95 (mm) and PSNR per contrast and site; Markdown table with the models side by side."""
    from training.options import require_train_extra

    require_train_extra()
    if real:
        from seqinv.errors import ParameterError
        from training.realbench.run import run_real_models

        if phantom or data:
            raise ParameterError("give exactly one test source: --real FOLDER, --phantom or --data FOLDER")

        result = run_real_models(real, output, model or [], cache_dir or None)
        typer.echo(result["table"])
        typer.echo(f"written: {', '.join(result['paths'].values())}")
        return
    from training.evaluate import run_evaluate

    result = run_evaluate(
        model,
        output,
        phantom=phantom,
        data=data,
        sigma=sigma,
        crop=crop,
        brain_model=brain_model,
        label_maps=label_maps,
    )
    typer.echo(result["table"])
    typer.echo(f"written: {', '.join(result['paths'].values())}")


def register_extra(train: typer.Typer, app: typer.Typer) -> None:
    train.command("export")(export_command)
    train.command("replay")(replay_command)
    app.command("evaluate")(evaluate_command)
