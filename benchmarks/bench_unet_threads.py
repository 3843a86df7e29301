"""The bare U-Net training loop under OpenMP wait policies, thread counts and batch sizes, side by side.

OpenMP reads ``OMP_WAIT_POLICY`` once, when PyTorch loads, so every variant runs in its own fresh
interpreter (this script with ``--child``); the variants alternate, ``--rounds`` times, so a change of load
hits them alike, and the medians are reported. Each child builds the network ``classifier=unet`` builds by
default (3-stage ResNet-18 U-Net, 4 input bands), trains two epochs over ``--patches`` patches of 64 px of
SYNTHETIC random data (speed does not depend on the values) with Adam, and reports the second (warm) epoch.

    .venv/bin/python benchmarks/bench_unet_threads.py                                  # wait policy x threads
    .venv/bin/python benchmarks/bench_unet_threads.py --policies PASSIVE --batch-sizes 16,32,64
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def child(threads: int, batch_size: int, patches: int) -> float:
    import numpy as np

    from cropseg.plugins import Registry, get_plugin_manager

    reg = Registry.from_plugin_manager(get_plugin_manager())
    model = reg.create("classifier", "unet", {"device": "cpu", "batch_size": batch_size})
    import torch  # after the plugin: loaded the way cropseg loads it

    torch.set_num_threads(threads)
    net = model._build(4)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(patches, 4, 64, 64)).astype(np.float32))
    y = torch.from_numpy((rng.random((patches, 64, 64)) < 0.4).astype(np.float32))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    net.train()
    secs = 0.0
    for _ in range(2):
        t = time.perf_counter()
        for s in range(0, patches, batch_size):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                net(x[s : s + batch_size])[:, 0], y[s : s + batch_size]
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
        secs = time.perf_counter() - t
    return secs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policies", default="default,PASSIVE", help="OMP_WAIT_POLICY values (default = unset)")
    ap.add_argument("--threads", default="1,all")
    ap.add_argument("--batch-sizes", default="16")
    ap.add_argument("--patches", type=int, default=160)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", nargs=3, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(f"{child(*args.child):.4f}")
        return 0
    cores = os.cpu_count() or 1
    threads = [cores if t == "all" else int(t) for t in args.threads.split(",")]
    variants = [(p, t, int(b)) for p in args.policies.split(",") for t in threads for b in args.batch_sizes.split(",")]
    loads = [os.getloadavg()[0]]
    each: dict[tuple, list[float]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for p, t, b in variants:
            env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
            if p != "default":
                env["OMP_WAIT_POLICY"] = p
            cmd = [sys.executable, __file__, "--child", str(t), str(b), str(args.patches)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            each[(p, t, b)].append(float(out.stdout.split()[-1]))
            loads.append(os.getloadavg()[0])
            print(f"policy {p}, {t} threads, batch {b}: {each[(p, t, b)][-1]:.2f} s", file=sys.stderr, flush=True)
    best = min(statistics.median(v) for v in each.values())
    print(
        f"Bare training epoch, {args.patches} SYNTHETIC patches of 64 px, {cores} cores, {args.rounds} alternating "
        f"rounds; 1-minute load average {min(loads):.1f}-{max(loads):.1f}.\n"
    )
    print("| OMP_WAIT_POLICY | threads | batch | epoch s (median) | each round | patches/s | vs fastest |")
    print("|---|---:|---:|---:|---|---:|---:|")
    for (p, t, b), v in each.items():
        med = statistics.median(v)
        rounds = ", ".join(f"{s:.2f}" for s in v)
        print(f"| {p} | {t} | {b} | {med:.2f} | {rounds} | {args.patches / med:.0f} | {best / med:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
