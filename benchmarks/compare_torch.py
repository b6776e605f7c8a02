"""Our training step against the PyTorch eager peer on the same preset, runs alternated.

    python benchmarks/compare_torch.py --preset fridadar64 [--runs 3] [--steps 5] [--batch 64]

Each run is a fresh process (``gan_step_throughput.py`` for ours, ``peers/torch_dcgan.py`` for
PyTorch; the two frameworks never share a process), ours and theirs alternating, so a change of
load on a shared machine hits both alike. Asserts equal trainable parameter counts, then prints
one JSON object: the median images/s of each side, their ratio (ours / torch; the number we
steer by, target >= 1.2), the achieved GFLOP/s of each (analytic step FLOPs, see
``gan_step_throughput.py``) and their share of the CPU's FP32 peak (``--peak-gflops``, default
156.5 = 2 cores x 2.445 GHz x 32 FLOP/cycle: two 256-bit FMA pipes, AVX2;
``cpu_peak.py`` measures the practical ceiling), and the 1-minute load average
after each pair of runs (the machine may be shared).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEAK_GFLOPS = 156.5
# The PyTorch peer of each preset (peers/torch_dcgan.py when not listed).
PEERS = {"contextual128": "torch_contextual.py", "contextual256": "torch_contextual.py"}


def run(script: Path, args: list[str]) -> dict:
    """Run one benchmark process; its last stdout line is a JSON object."""
    out = subprocess.run([sys.executable, str(script), *args], cwd=HERE.parent, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{script.name} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fridadar64")
    parser.add_argument("--runs", type=int, default=3, help="runs of each side (alternating)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--peak-gflops", type=float, default=PEAK_GFLOPS)
    parser.add_argument("--ours-args", default="", help="extra arguments for gan_step_throughput.py")
    args = parser.parse_args(argv)
    common = ["--preset", args.preset, "--batch", str(args.batch), "--steps", str(args.steps),
              "--warmup", str(args.warmup)]
    ours, theirs, loads = [], [], []
    for i in range(args.runs):
        ours.append(run(HERE / "gan_step_throughput.py", common + args.ours_args.split()))
        theirs.append(run(HERE / "peers" / PEERS.get(args.preset, "torch_dcgan.py"), common))
        loads.append(round(os.getloadavg()[0], 2))
        print(f"run {i + 1}/{args.runs}: ours {ours[-1]['images_per_second']} img/s, "
              f"torch {theirs[-1]['images_per_second']} img/s, load average {loads[-1]}", file=sys.stderr, flush=True)
    if ours[0]["params"] != theirs[0]["params"]:
        raise SystemExit(f"parameter counts differ: ours {ours[0]['params']} vs torch {theirs[0]['params']}")
    flop_per_image = ours[0]["step_gflop_per_image"]
    ours_ips = statistics.median(r["images_per_second"] for r in ours)
    torch_ips = statistics.median(r["images_per_second"] for r in theirs)
    result = {"preset": args.preset, "batch": args.batch, "runs": args.runs, "steps": args.steps,
              "params": ours[0]["params"], "step_gflop_per_image": flop_per_image,
              "ours_images_per_second": [r["images_per_second"] for r in ours],
              "torch_images_per_second": [r["images_per_second"] for r in theirs],
              "load_average_1min": loads, "ours_median": ours_ips, "torch_median": torch_ips, "ratio": round(ours_ips / torch_ips, 3)}
    for name, ips in (("ours", ours_ips), ("torch", torch_ips)):
        gflops = ips * flop_per_image
        result[f"{name}_gflop_per_second"] = round(gflops, 2)
        result[f"{name}_share_of_peak"] = round(gflops / args.peak_gflops, 4)
    result["torch_version"] = theirs[0]["torch"]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
