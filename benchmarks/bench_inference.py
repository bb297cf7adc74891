"""Time `seqinv segment` and `seqinv denoise` on a 1 mm whole-head volume on CPU (the bundled `lite` preset;
`--preset small` for the larger one).

Prints median wall time per volume (the whole CLI: start-up, read, preprocess, inference, write), peak
memory (RSS), median time per stage, achieved GFLOP/s of the sliding window (FLOPs counted with
torch.utils.flop_counter per window), and fp32 vs bf16 on one window.

    python benchmarks/bench_inference.py --runs 3 [--volume head.nii.gz] [--model DIR] [--fast]

Without --model a random U-Net of `--preset` (default lite, the bundled models' size) is used:
speed does not depend on the weights. Targets on the
2-core dev CPU: <= 20 s per volume, <= 3 GB peak.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PRESET = "lite"


def head_volume(path: Path) -> Path:
    """A ~182x218x182 1 mm head: the physics phantom's MPRAGE if available, else a synthetic ellipsoid."""
    import nibabel as nib

    try:
        import torch

        from seqinv.physics import simulate
        from seqinv.physics.phantom import make_phantom
        from seqinv.physics.sequences import MPRAGE

        phantom = make_phantom(7)
        sequence = MPRAGE(tr_s=2.3, ti_s=0.9, te_s=0.003, flip_deg=9, n_exc=176, esp_s=0.007, inv_eff=0.96)
        data = simulate(phantom.maps, sequence).float().numpy()
        affine = phantom.affine
        del torch
    except Exception as err:  # the benchmark only needs a head-sized volume
        print(f"(phantom unavailable: {err}; using a synthetic ellipsoid)", file=sys.stderr)
        i, j, k = np.mgrid[:182, :218, :182].astype(np.float32)
        radius = ((i - 91) / 70) ** 2 + ((j - 109) / 90) ** 2 + ((k - 91) / 75) ** 2
        data = np.where(radius < 1, 100 + 30 * np.sin(i / 4) * np.cos(j / 5), 0).astype(np.float32)
        data += np.abs(np.random.default_rng(0).normal(0, 3, data.shape)).astype(np.float32)
        affine = np.diag([1.0, 1.0, 1.0, 1.0])
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), path)
    return path


def random_models(root: Path) -> dict[str, Path]:
    import torch

    from seqinv.models import ModelConfig, SeqInvUNet

    torch.manual_seed(0)
    labels = ["background", "csf", "gm", "wm"]
    seg = ModelConfig.from_preset(PRESET, arch="unet", task="segment", out_channels=4, labels=labels)
    den = ModelConfig.from_preset(PRESET, arch="unet", task="denoise", out_channels=1)
    SeqInvUNet(seg).save_pretrained(root / "seg")
    SeqInvUNet(den).save_pretrained(root / "den")
    return {"segment": root / "seg", "denoise": root / "den"}


def window_flops(patch: tuple[int, int, int], out_channels: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from seqinv.models import ModelConfig, SeqInvUNet

    net = SeqInvUNet(ModelConfig.from_preset(PRESET, arch="unet", out_channels=out_channels)).eval()
    # the counter knows aten.convolution, not the direct oneDNN call seqinv makes on CPU: count with it off
    with (
        torch.backends.mkldnn.flags(enabled=False),
        FlopCounterMode(display=False) as counter,
        torch.inference_mode(),
    ):
        net(torch.zeros(1, 1, *patch))
    return float(counter.get_total_flops())


def n_windows(shape: list[int], patch: tuple[int, int, int], overlap: float) -> int:
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    roi = tuple(min(p, max(s, p)) for s, p in zip(shape, patch, strict=True))
    padded = tuple(max(s, p) for s, p in zip(shape, patch, strict=True))
    interval = _get_scan_interval(padded, roi, 3, (overlap,) * 3)
    return len(dense_patch_slices(padded, roi, interval))


def bf16_vs_fp32(patch: tuple[int, int, int]) -> dict[str, float]:
    """Seconds for one window forward in fp32 and with bf16 autocast (CPU)."""
    import torch

    from seqinv.models import ModelConfig, SeqInvUNet

    net = SeqInvUNet(ModelConfig.from_preset(PRESET, arch="unet", out_channels=4)).eval()
    net = net.to(memory_format=torch.channels_last_3d)
    x = torch.randn(1, 1, *patch).contiguous(memory_format=torch.channels_last_3d)
    out = {}
    for name, enabled in (("fp32", False), ("bf16", True)):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            start = time.perf_counter()
            net(x)
            out[name] = time.perf_counter() - start
    return out


def run_cli(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "seqinv", *args], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--volume", type=Path)
    parser.add_argument("--model", type=Path, help="segmentation model folder (default: random --preset)")
    parser.add_argument("--preset", default="lite", help="preset of the random models (default: lite)")
    parser.add_argument("--fast", action="store_true", help="pass --fast (overlap 0.25)")
    parser.add_argument("--skip-bf16", action="store_true")
    parser.add_argument(
        "--precision", default="auto", help="passed to the CLI (fp32: the speed bar's setting on any CPU)"
    )
    options = parser.parse_args()
    global PRESET
    PRESET = options.preset

    work = Path(tempfile.mkdtemp(prefix="seqinv-bench-"))
    volume = options.volume or head_volume(work / "head_T1w.nii.gz")
    models = random_models(work)
    if options.model:
        models["segment"] = options.model
    extra = (["--fast"] if options.fast else []) + ["--precision", options.precision]
    patch = (96, 96, 96)
    shape = __import__("nibabel").load(volume).shape
    print(f"volume {volume}  shape {shape}  runs {options.runs}  precision {options.precision}")
    for command, channels in (("segment", 4), ("denoise", 1)):
        walls, stages = [], []
        for run in range(options.runs):
            out = work / f"{command}{run}.nii.gz"
            walls.append(
                run_cli([command, str(volume), "--model", str(models[command]), "-o", str(out), *extra])
            )
            stages.append(json.loads(out.with_suffix("").with_suffix(".json").read_text()))
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
        crop = [b - a for a, b in stages[0]["preprocessing"]["crop"]]
        windows = n_windows(crop, patch, stages[0]["overlap"])
        inference_s = statistics.median(s["timings_s"]["inference"] for s in stages)
        gflops = windows * window_flops(patch, channels) / 1e9
        print(
            f"\n{command}: median wall {statistics.median(walls):.1f} s "
            f"(runs {', '.join(f'{w:.1f}' for w in walls)})"
        )
        print(
            f"  peak RSS (max over runs) {peak_gb:.2f} GB; crop {crop}, {windows} windows of 96^3, "
            f"overlap {stages[0]['overlap']}, sw_batch_size {stages[0]['sw_batch_size']}"
        )
        for stage in stages[0]["timings_s"]:
            print(f"  {stage:<12} {statistics.median(s['timings_s'][stage] for s in stages):7.2f} s")
        print(
            f"  sliding window: {gflops:.0f} GFLOP in {inference_s:.1f} s "
            f"= {gflops / inference_s:.1f} GFLOP/s"
        )
    if not options.skip_bf16:
        timing = bf16_vs_fp32(patch)
        print(f"\none 96^3 window: fp32 {timing['fp32']:.2f} s, bf16 autocast {timing['bf16']:.2f} s")


if __name__ == "__main__":
    main()
