"""PreciseBatchNormHook vs fvcore's update_bn_stats on the same batches (torchvision ResNet-50, CPU).

Run: .venv/bin/python tools/bench/bench_precise_bn.py [--repeats 3] [--batches 4]
Both recompute the statistics of all 53 BatchNorm layers from the same batches of 16 images of
96x96; they alternate, and the median of each is reported with the hook/fvcore ratio (target <= 1.05).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from types import SimpleNamespace

import torch
import torchvision

from classy_hooks.model import PreciseBatchNormHook

with warnings.catch_warnings():  # fvcore.nn calls the deprecated torch.jit.script at import
    warnings.simplefilter("ignore")
    from fvcore.nn.precise_bn import update_bn_stats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=96)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = torchvision.models.resnet50().train()
    gen = torch.Generator().manual_seed(0)
    inputs = [
        torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=gen) for _ in range(args.batches)
    ]
    task = SimpleNamespace(base_model=model, train=True, dataloader=[{"input": x} for x in inputs])
    hook = PreciseBatchNormHook(args.batches * args.batch_size)
    times: dict[str, list[float]] = {"fvcore update_bn_stats": [], "PreciseBatchNormHook": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        update_bn_stats(model, inputs, num_iters=args.batches)
        times["fvcore update_bn_stats"].append(time.perf_counter() - start)
        start = time.perf_counter()
        hook.on_phase_end(task)
        times["PreciseBatchNormHook"].append(time.perf_counter() - start)
    medians = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"ResNet-50, {args.batches} batches of {args.batch_size}x3x{args.image_size}x{args.image_size}, "
        f"1 thread, median of {args.repeats}"
    )
    for name, median in medians.items():
        print(f"  {name:24s} {median:7.3f} s   {median / medians['fvcore update_bn_stats']:5.3f}x fvcore")


if __name__ == "__main__":
    main()
