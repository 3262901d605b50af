"""Training throughput: pai's on-device loop against a plain torchvision DataLoader loop.

Both loops train the same zoo model with the same optimizer and batch size for the same number
of steps, in this process, one after the other; the report is samples per second of each and
their ratio. Usage:

    python benchmarks/bench_train.py --model lenet300 --dataset mnist --steps 400 \
        --data-root ../shared/data [--device cuda]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
import torchvision
from torchvision import transforms

import pai
from pai.core.atomic import atomic_write_text
from pai.data.loading import resolve_data_root
from pai.core.devices import resolve_device
from pai.report.provenance import current_command, provenance_markdown


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def dataloader_loop(model_name, spec, root, device, steps, batch_size, workers) -> float:
    """Samples per second of the textbook loop: torchvision dataset, transforms, DataLoader."""
    dataset = getattr(torchvision.datasets, spec.torchvision_name)(
        root=str(root),
        train=True,
        download=False,
        transform=transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)]
        ),
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(0),
    )
    model = pai.build_model(model_name, spec.name, seed=0).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    done = 0
    synchronize(device)
    start = time.perf_counter()
    while done < steps:
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
                loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += 1
            if done == steps:
                break
    synchronize(device)
    return steps * batch_size / (time.perf_counter() - start)


def pai_loop(model_name, spec, root, device, steps, batch_size) -> float:
    """Samples per second of `pai.train`, data on the device (its one evaluation excluded)."""
    data = pai.load_dataset(spec.name, root=root, device=device)
    model = pai.build_model(model_name, spec.name, seed=0)
    config = pai.TrainConfig(
        budget=f"{steps}it",
        batch_size=batch_size,
        lr=0.05,
        lr_schedule="constant",
        eval_every=f"{steps}it",
    )
    metrics = pai.train(model, data, config, device=device, progress=False).metrics
    return steps * batch_size / (metrics["wall_seconds"] - metrics["eval_seconds"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet300")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the baseline")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default=str(Path(__file__).parents[1] / "results" / "perf"))
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    spec = pai.dataset_spec(args.dataset)
    root = resolve_data_root(args.data_root)
    pai.load_dataset(spec.name, root=root, device="cpu")  # unpack or verify files before timing
    start = time.perf_counter()
    baseline = dataloader_loop(
        args.model, spec, root, device, args.steps, args.batch_size, args.workers
    )
    ours = pai_loop(args.model, spec, root, device, args.steps, args.batch_size)
    wall = time.perf_counter() - start
    row = {
        "model": args.model,
        "dataset": args.dataset,
        "device": str(device),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "dataloader_workers": args.workers,
        "dataloader_samples_per_s": round(baseline, 1),
        "pai_samples_per_s": round(ours, 1),
        "speedup": round(ours / baseline, 2),
    }
    table = pd.DataFrame([row])
    print(table.to_string(index=False))
    out = Path(args.out)
    name = f"train-{args.model}-{args.dataset}-{device.type}"
    atomic_write_text(out / f"{name}.csv", table.to_csv(index=False))
    atomic_write_text(
        out / f"{name}.md",
        f"# Training throughput: {args.model} on {args.dataset} ({device.type})\n\n"
        + table.to_markdown(index=False)
        + "\n\nBoth loops run in the same process, one after the other: the baseline is a "
        "torchvision dataset with ToTensor/Normalize transforms behind a DataLoader; pai holds "
        "the split on the device and draws batches from a seeded permutation there.\n\n"
        + provenance_markdown(current_command(), wall, device=device).replace(
            "# Provenance", "## Provenance"
        ),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
