"""Training throughput per stage: samples/s of one optimiser step (augment + forward + backward + SGD).

    python benchmarks/train_speed.py                      # CPU: tiny, plus full-size for one step
    python benchmarks/train_speed.py --device cuda        # a GPU: full-size at batch 32, bf16 and fp32
    python benchmarks/train_speed.py --stages full --archs audioclip-rn50 --batch 16 --steps 5
    python benchmarks/train_speed.py --loop --steps 40    # the whole training loop (trainer.train)

Each row builds the stage's module exactly as ``acsearch train`` does (``trainer.tasks.build_task``:
frozen teachers in eval mode, FBSP trained, spectrogram in float32 under autocast), feeds it
synthetic batches of 5 s clips at 44.1 kHz (+ 224 px frames and 77-token captions where the stage
uses them) through the batched augmentations on the device, and times optimiser steps after
warm-up (median). Data loading is measured separately: decoding real tuxpaint triples (sound +
picture + caption) through the trainer's ``TrainingSet`` and ``collate`` on one process.
``--loop`` instead runs ``trainer.train`` itself (tiny model, cached esc50-mini clips, no
validation) for ``--steps`` optimiser steps and reports the loop's samples/s: what the per-batch
bookkeeping (bad-sample counters, loss checks, logging) costs on top of the step.
Prints a table and writes JSON (default benchmarks/results/train_speed.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
STAGES = ("audio-head", "cooperative", "full", "finetune")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_stage(stage: str, arch: str, device: torch.device, precision: str, batch: int, steps: int,
                clip_samples: int, warmup: int = 1) -> dict:
    from audioclip_search.audio import to_model_scale
    from audioclip_search.devices import autocast
    from audioclip_search.text import tokenize
    from audioclip_search.trainer.augment import Augmenter
    from audioclip_search.trainer.config import build_config
    from audioclip_search.trainer.tasks import build_task

    overrides = [f"model.arch={arch}", "model.init=none", "data.train=synthetic.csv", "data.root=/synthetic",
                 f"precision={precision}"]
    cfg = build_config(stage, overrides=overrides)
    torch.manual_seed(0)
    use_image = stage in ("cooperative", "full")
    use_text = stage != "audio-head"
    classes = [f"class {i}" for i in range(527)]  # AudioSet's vocabulary size
    task = build_task(cfg, classes, multilabel=True, use_image=use_image, use_text=use_text).to(device).train()
    params = [p for p in task.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-5, momentum=0.9, nesterov=True, weight_decay=5e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    augmenter = Augmenter(cfg.augment, clip_samples)
    g = torch.Generator().manual_seed(0)
    # 5-6 s clips of different lengths, as a padded batch with lengths (what collate produces)
    lengths = torch.randint(clip_samples, int(clip_samples * 1.2), (batch,), generator=g)
    audio = (torch.rand(batch, 1, int(lengths.max()), generator=g) * 2 - 1) * 0.3
    image = torch.randn(batch, 3, 224, 224, generator=g) if use_image else None
    tokens = tokenize([f"the sound of thing number {i}" for i in range(batch)]) if use_text else None
    target = (torch.rand(batch, 527, generator=g) < 0.01).float() if stage == "audio-head" else None
    inputs = {k: (v.to(device) if v is not None else None) for k, v in
              {"audio": audio, "lengths": lengths, "image": image, "tokens": tokens, "target": target}.items()}
    aug_gen = torch.Generator(device=device)

    def step() -> float:
        aug_gen.manual_seed(1)
        with torch.no_grad():
            x = to_model_scale(augmenter(inputs["audio"], inputs["lengths"], aug_gen, train=True))
        with autocast(device, precision):
            loss, _ = task(audio=x, image=inputs["image"], tokens=inputs["tokens"], target=inputs["target"])
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = step()
        _sync(device)
        times.append(time.perf_counter() - start)
    # the augmentation alone, for its share of a step
    aug_times = []
    for _ in range(max(3, steps)):
        start = time.perf_counter()
        with torch.no_grad():
            augmenter(inputs["audio"], inputs["lengths"], aug_gen, train=True)
        _sync(device)
        aug_times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        "stage": stage, "arch": arch, "device": str(device), "precision": precision, "batch": batch,
        "clip_samples": clip_samples, "timed_steps": steps, "step_s": median, "samples_per_s": batch / median,
        "augment_samples_per_s": batch / statistics.median(aug_times), "loss": loss,
        "trainable_params_m": sum(p.numel() for p in params) / 1e6,
        "peak_gpu_gb": torch.cuda.max_memory_allocated(device) / 1024**3 if device.type == "cuda" else None,
    }


def bench_loading(n: int = 32) -> dict | None:
    """Decoding throughput of real triples (ogg + png + caption) through TrainingSet + collate."""
    triples = SHARED_DATA / "tuxpaint-triples" / "triples.csv"
    if not triples.is_file():
        return None
    from audioclip_search.trainer.config import DataConfig
    from audioclip_search.trainer.data import TrainingSet, collate, load_source

    source = load_source(DataConfig(train=str(triples)))
    ds = TrainingSet(source.samples[:n], source.preprocessing, train=True, text="auto", images=True)
    start = time.perf_counter()
    for i in range(0, n, 8):
        collate([ds[j] for j in range(i, min(n, i + 8))])
    elapsed = time.perf_counter() - start
    return {"samples": n, "samples_per_s_per_worker": n / elapsed}


def bench_loop(stage: str, device: str, batch: int, steps: int, log_every: int, clip_samples: int) -> dict | None:
    """Samples/s of ``trainer.train`` itself, from its own metrics (the first logged interval dropped)."""
    import tempfile

    from audioclip_search.trainer import build_config, train

    esc50 = SHARED_DATA / "esc50-mini"
    if not (esc50 / "meta" / "esc50.csv").is_file():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        overrides = ["model.arch=audioclip-tiny", "model.init=none", "data.num_workers=0", "data.cache_audio=true",
                     f"data.clip_samples={clip_samples}", f"log.every_steps={log_every}", "log.display=none",
                     "data.dataset=esc50", f"data.root={esc50}", "data.folds=null", "data.val_fraction=0",
                     f"batch_size={batch}", "epochs=1000", f"max_steps={steps}", f"device={device}",
                     "checkpoint.every_steps=0", "checkpoint.val_every=1000"]
        cfg = build_config(stage, overrides=overrides)
        start = time.perf_counter()
        train(cfg, Path(tmp) / "run")
        wall = time.perf_counter() - start
        records = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    rates = [r["samples_per_s"] for r in records if r.get("kind") == "train"][1:]
    return {"stage": stage, "batch": batch, "steps": steps, "log_every": log_every, "clip_samples": clip_samples,
            "samples_per_s": statistics.median(rates) if rates else float("nan"), "intervals": len(rates),
            "wall_s": wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--archs", nargs="+", default=None, help="default: tiny and rn50 on CPU, rn50 on CUDA")
    parser.add_argument("--precision", nargs="+", default=None, help="default: fp32 on CPU; bf16 and fp32 on CUDA")
    parser.add_argument("--batch", type=int, default=None, help="default: 8 tiny / 2 rn50 on CPU, 32 on CUDA")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 3 tiny / 1 rn50 on CPU, 5)")
    parser.add_argument("--clip-seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "train_speed.json")
    parser.add_argument("--loop", action="store_true", help="time trainer.train itself (tiny model) instead")
    parser.add_argument("--log-every", type=int, default=5, help="--loop: log.every_steps")
    args = parser.parse_args()
    if args.loop:
        return loop_main(args)

    from audioclip_search.devices import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    archs = args.archs or (["audioclip-rn50"] if cuda else ["audioclip-tiny", "audioclip-rn50"])
    precisions = args.precision or (["bf16", "fp32"] if cuda else ["fp32"])
    clip = int(round(args.clip_seconds * 44100))
    console = Console(width=None if Console().is_terminal else 150)
    rows = []
    for arch in archs:
        small = arch == "audioclip-tiny"
        batch = args.batch or (32 if cuda else 8 if small else 2)
        steps = args.steps or (5 if cuda else 3 if small else 1)
        for precision in precisions:
            for stage in args.stages:
                console.print(f"{stage} {arch} {precision} batch {batch} ...", highlight=False)
                rows.append(bench_stage(stage, arch, device, precision, batch, steps, clip))
    loading = bench_loading()

    name = torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine()
    table = Table(title=f"Training throughput on {device} ({name}, {torch.get_num_threads()} threads), "
                        f"{args.clip_seconds:g} s clips")
    for col in ("stage", "arch", "precision", "batch", "step s", "samples/s", "augment samples/s", "trainable M",
                "peak GPU GB"):
        table.add_column(col, justify="left" if col in ("stage", "arch", "precision") else "right")
    for r in rows:
        table.add_row(r["stage"], r["arch"], r["precision"], str(r["batch"]), f"{r['step_s']:.2f}",
                      f"{r['samples_per_s']:.2f}", f"{r['augment_samples_per_s']:.0f}",
                      f"{r['trainable_params_m']:.1f}", "-" if r["peak_gpu_gb"] is None else f"{r['peak_gpu_gb']:.1f}")
    console.print(table)
    if hasattr(os, "getloadavg"):
        console.print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
                      f"(other processes slow the figures down)", highlight=False)
    if loading:
        console.print(f"data loading (decode ogg + png, tokenize; one worker): "
                      f"{loading['samples_per_s_per_worker']:.1f} samples/s", highlight=False)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "device": str(device), "device_name": name, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": sys.version.split()[0], "clip_seconds": args.clip_seconds, "results": rows,
        "loading": loading, "peak_rss_gb": peak_rss,
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }, indent=2))
    console.print(f"wrote {args.out}")
    return 0


def loop_main(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    stages = args.stages if args.stages != list(STAGES) else ["finetune"]
    batch, steps = args.batch or 4, args.steps or 40
    clip = int(round(args.clip_seconds * 44100)) if args.clip_seconds != 5.0 else 11025
    console = Console(width=None if Console().is_terminal else 150)
    rows = [r for r in (bench_loop(s, args.device, batch, steps, args.log_every, clip) for s in stages) if r]
    table = Table(title=f"trainer.train throughput ({args.device}, {torch.get_num_threads()} threads, tiny model, "
                        f"{clip} samples per clip)")
    for col in ("stage", "batch", "steps", "log every", "samples/s (median interval)", "wall s"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for r in rows:
        table.add_row(r["stage"], str(r["batch"]), str(r["steps"]), str(r["log_every"]), f"{r['samples_per_s']:.1f}",
                      f"{r['wall_s']:.1f}")
    console.print(table)
    out = args.out.with_name("train_loop_speed.json") if args.out.name == "train_speed.json" else args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": torch.get_num_threads(), "torch": torch.__version__, "results": rows,
                               "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
                              indent=2))
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
