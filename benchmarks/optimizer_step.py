"""Optimizer step cost: torch's per-parameter loop vs foreach vs fused AdamW, for a model's parameters.

Off CUDA torch picks the per-parameter loop by default. A VideoPrism model has ~150 parameter
tensors (tiny) to ~300 (base), so the loop's Python and dispatch overhead is paid hundreds of
times a step; the multi-tensor (``foreach``) and single-kernel (``fused``) implementations pay it
once. This script times ``opt.step()`` for each on the same parameters and gradients, rounds
interleaved, and reports each against the loop (a ratio, so a busy machine still compares fairly).
It also times a frozen-feature MAP probe step (the evaluation heads' loop) with the loop and foreach.

    python benchmarks/optimizer_step.py                          # tiny model + probe, 1 thread
    python benchmarks/optimizer_step.py --model videoprism_v1_base --threads 2
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

import open_videoprism as ovp
from open_videoprism.eval.probes import AttentiveProbe

IMPLS: dict[str, dict[str, bool]] = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def time_optimizer(params: list[torch.nn.Parameter], rounds: int, steps: int) -> dict[str, float]:
    """Minimum over ``rounds`` of the mean ``opt.step()`` time (ms) for each implementation."""
    opts = {name: torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05, **kw) for name, kw in IMPLS.items()}
    best = dict.fromkeys(opts, float("inf"))
    for _ in range(rounds):
        for name, opt in opts.items():  # interleaved: drift in machine load hits every case alike
            opt.step()  # warm (state allocated on the first step)
            t0 = time.perf_counter()
            for _ in range(steps):
                opt.step()
            best[name] = min(best[name], (time.perf_counter() - t0) / steps * 1e3)
    return best


def time_probe(rounds: int, steps: int, dim: int = 64, tokens: int = 64, batch: int = 32) -> dict[str, float]:
    """ms per forward+backward+step of a MAP probe on frozen tokens, loop vs foreach AdamW."""
    x = torch.randn(batch, tokens, dim)
    y = torch.randint(0, 12, (batch,))
    out: dict[str, float] = {}
    for _ in range(rounds):
        for name in ("loop", "foreach"):
            torch.manual_seed(0)
            probe = AttentiveProbe(dim, 12)
            opt = torch.optim.AdamW(probe.parameters(), lr=1e-3, **IMPLS[name])
            t0 = time.perf_counter()
            for _ in range(steps):
                loss = torch.nn.functional.cross_entropy(probe(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            out[name] = min(out.get(name, float("inf")), (time.perf_counter() - t0) / steps * 1e3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="videoprism_lvt_test_tiny", help="registry name (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the minimum is kept")
    ap.add_argument("--steps", type=int, default=30, help="steps timed per round")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = ovp.create_model(args.model)
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}, {args.threads} thread(s)")
    print(f"{args.model}: {len(params)} tensors, {sum(p.numel() for p in params) / 1e6:.2f} M parameters")
    res = time_optimizer(params, args.rounds, args.steps)
    for name, ms in res.items():
        print(f"  AdamW {name:8s} {ms:8.2f} ms/step   {res['loop'] / ms:5.2f}x the loop")
    probe = time_probe(args.rounds, args.steps)
    for name, ms in probe.items():
        print(f"  MAP probe step, AdamW {name:8s} {ms:7.2f} ms   {probe['loop'] / ms:5.2f}x the loop")


if __name__ == "__main__":
    main()
