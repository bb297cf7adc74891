"""Pretraining throughput on this machine: step time, views/s and the share of step time spent generating
data (simulation + augmentation; target < 20 %), for the small and paper presets.

    python benchmarks/bench_pretrain.py --presets small,paper --patch-size 64 --batch-size 4 --steps 3

Data for each step is generated in the training process (as with --workers 0), then the model step runs;
the first step is a warm-up and is not counted.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch


def bench(preset: str, patch: int, batch: int, steps: int, precision: str, elastic: bool, phantoms) -> dict:
    from seqinv.models import SeqInvEncoder
    from training import loop
    from training.augment import AugmentConfig
    from training.pretrain import PretrainNet, pretrain_loss
    from training.views import PretrainDataset, ViewMaker

    aug = dataclasses.replace(AugmentConfig.pretrain(), elastic_prob=1.0 if elastic else 0.0)
    dataset = PretrainDataset(phantoms, ViewMaker("seqinv", patch, aug), run_seed=0)
    net = PretrainNet(SeqInvEncoder(preset=preset)).to(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    data_s, step_s = [], []
    for step in range(steps + 1):
        t0 = time.perf_counter()
        batch_data = torch.utils.data.default_collate([dataset[step * batch + i] for i in range(batch)])
        t1 = time.perf_counter()
        with loop.autocast(precision, "cpu"):
            loss, _ = pretrain_loss(net, batch_data, 0.5)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12.0)
        optimizer.step()
        t2 = time.perf_counter()
        if step:  # skip warm-up
            data_s.append(t1 - t0)
            step_s.append(t2 - t0)
    mean_step = sum(step_s) / len(step_s)
    return {
        "preset": preset,
        "patch": patch,
        "batch_pairs": batch,
        "precision": precision,
        "elastic": elastic,
        "step_s": mean_step,
        "views_per_s": 2 * batch / mean_step,
        "data_share": sum(data_s) / sum(step_s),
        "params_m": sum(p.numel() for p in net.encoder.parameters()) / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="small,paper")
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--elastic", action="store_true", help="also apply Rand3DElastic (always)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from training.phantom_cache import default_cache_dir
    from training.pools import phantom_pool

    t0 = time.perf_counter()
    phantoms = phantom_pool(1, cache_dir=default_cache_dir())
    print(f"phantom pool (1, cached after the first run): {time.perf_counter() - t0:.1f} s")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        "| preset | encoder M params | patch | pairs/step | precision | elastic | s/step | views/s "
        "| data share |"
    )
    print("|---|---:|---:|---:|---|---|---:|---:|---:|")
    for preset in args.presets.split(","):
        r = bench(
            preset, args.patch_size, args.batch_size, args.steps, args.precision, args.elastic, phantoms
        )
        print(
            f"| {r['preset']} | {r['params_m']:.1f} | {r['patch']} | {r['batch_pairs']} | {r['precision']} | "
            f"{r['elastic']} | {r['step_s']:.2f} | {r['views_per_s']:.2f} | {100 * r['data_share']:.1f} % |",
            flush=True,
        )


if __name__ == "__main__":
    main()
