"""Time of one training step of a model config, for several variants and precisions, side by side.

Each variant is a set of Hydra overrides of the real config (``conf/train.yaml`` with
``--experiment`` or ``--model``); each is built as ``python train.py`` builds it (the lab's net
with its memory order, optimizer and loss) and trained on random images of the data's shape at
the config's batch size, forward, loss, backward and optimizer step, under each precision
(``32-true``; ``bf16-mixed`` runs the step under ``torch.autocast``, as Lightning's precision
plugin does). No data is read and nothing is written::

    python benchmarks/step_time.py --experiment cifar10_record --precision 32-true,bf16-mixed \\
        --variant "3x3 stem:" \\
        --variant "whitening stem:model.net.stem=whiten2x2 model.net.widths=[24,64,128,256]"

A variant is ``NAME:OVERRIDES`` (space-separated overrides; none for the config as it is). The
variants and precisions run in turn, ``--rounds`` times, so that a slow spell of the machine falls
on all of them; each figure is the median step time over the rounds' steps after the first step
of each round (a warm-up). Prints one table: variant, precision, ms per step, images/s, and the
images/s against the first row's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.speed import compose  # noqa: E402

PRECISIONS = ("32-true", "bf16-mixed")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--experiment", help="an experiment config (conf/experiment/NAME.yaml)")
    what.add_argument("--model", help="a model config, with --data (default: the train config's)")
    parser.add_argument("--data", help="a data config, with --model")
    parser.add_argument("--variant", action="append", default=[], help="NAME:OVERRIDES")
    parser.add_argument("--precision", default="32-true", help="comma list of 32-true, bf16-mixed")
    parser.add_argument("--steps", type=int, default=6, help="steps per round (first: warm-up)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, help="default: the config's data.batch_size")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args(argv)
    args.precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    unknown = sorted(set(args.precisions) - set(PRECISIONS))
    if unknown:
        parser.error(f"--precision {', '.join(unknown)} is not one of {', '.join(PRECISIONS)}")
    if args.steps < 2 or args.rounds < 1:
        parser.error("--steps must be at least 2 (the first is a warm-up) and --rounds at least 1")
    args.variants = [("as configured", [])] if not args.variant else []
    for text in args.variant:
        name, sep, overrides = text.partition(":")
        if not sep or not name.strip():
            parser.error(f"--variant {text!r} is not NAME:OVERRIDES, e.g. 'b64:data.batch_size=64'")
        args.variants.append((name.strip(), overrides.split()))
    return args


def base_overrides(args: argparse.Namespace) -> list[str]:
    if args.experiment:
        return [f"experiment={args.experiment}"]
    groups = (("model", args.model), ("data", args.data))
    return [f"{group}={name}" for group, name in groups if name]


def build_step(args: argparse.Namespace, overrides: list[str]):
    """A function running one training step of the configured model, and its batch size."""
    import torch

    from lightning_models.build import instantiate_node as build

    cfg = compose([*base_overrides(args), *overrides])
    torch.manual_seed(0)
    module = build(cfg.model).to(args.device)
    module.train()
    optimizer = module.optimizer_factory(params=module.parameters())
    batch = args.batch_size or int(cfg.data.batch_size)
    shape = (batch, int(cfg.data.in_channels), int(cfg.data.image_size), int(cfg.data.image_size))
    x = torch.randn(shape, device=args.device)
    y = torch.randint(0, int(cfg.data.num_classes), (batch,), device=args.device)

    def step(precision: str) -> None:
        autocast = (
            torch.autocast(args.device, dtype=torch.bfloat16)
            if precision == "bf16-mixed"
            else nullcontext()
        )
        with autocast:
            loss = module.criterion(module(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if args.device == "cuda":
            torch.cuda.synchronize()

    return step, batch


def measure(args: argparse.Namespace) -> list[tuple[str, str, float, int]]:
    """``(variant, precision, median seconds per step, batch size)`` per row."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    steps = {name: build_step(args, overrides) for name, overrides in args.variants}
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for name, _overrides in args.variants:
            step, _batch = steps[name]
            for precision in args.precisions:
                for k in range(args.steps):
                    start = time.perf_counter()
                    step(precision)
                    if k:  # the first step of a round warms up
                        times.setdefault((name, precision), []).append(time.perf_counter() - start)
    return [
        (name, precision, statistics.median(times[name, precision]), steps[name][1])
        for name, _overrides in args.variants
        for precision in args.precisions
    ]


def table(rows: list[tuple[str, str, float, int]]) -> str:
    first = rows[0][3] / rows[0][2]
    lines = [
        "| variant | precision | batch | ms/step | images/s | against the first row |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, precision, seconds, batch in rows:
        rate = batch / seconds
        lines.append(
            f"| {name} | {precision} | {batch} | {seconds * 1000:.0f} | {rate:,.0f} | "
            f"{rate / first:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from hydra.errors import HydraException

    from lightning_models.checks import LabError

    args = parse_args(argv)
    try:
        rows = measure(args)
    except (LabError, HydraException) as err:
        print(f"step_time.py: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
