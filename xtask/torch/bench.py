#!/usr/bin/env python3
"""PyTorch eager's side of `cargo xtask bench --torch` (issue "faster than PyTorch eager").

The same network, batch and steps as sdeflow's bench, written the way a careful PyTorch user
would write them, so that the ratio sdeflow ÷ PyTorch compares arithmetic with arithmetic:

- the `mlp` score network (plugins/sdeflow-score-mlp): a sinusoidal embedding of the half
  log-SNR λ = log(α/σ) (E = 128, maximal period 10,000), SiLU hidden layers (3 × 256 by
  default) and a linear output, with the first layer split as W₁ˣ x + (W₁ᵉ e(λ) + b₁) just as
  sdeflow evaluates it, so that a sampling step embeds one row, not one per sample;
- `sample`: Euler on the probability-flow ODE of VP (β from 0.1 to 20) reading the network
  as ε, N uniform steps from T = 1 to t_ε = 1e-3 (N NFE), under `torch.inference_mode()`;
- `train`: one denoising-score-matching step per iteration on the 8-mode ring (radius 3,
  std 0.15): rows, t ~ U(t_ε, 1), ε, the ε-loss, backward, clipping at global norm 1,
  `torch.optim.AdamW` at its defaults but lr = 2e-3 (the default job's), and one EMA (0.999)
  with `torch._foreach_lerp_`.

Threads: `torch.set_num_threads(k)` and `torch.set_num_interop_threads(1)`. Each call warms up
first, then prints one JSON line with the wall time of every repeat (seconds per sampling
run, or per `--steps` training steps).

    python xtask/torch/bench.py sample --threads 1 --batch 10000 --nfe 100 --repeats 1
    python xtask/torch/bench.py train --threads 2 --batch 512 --steps 100 --repeats 1
"""

import argparse
import json
import math
import sys
import time

import torch

T_MAX, T_EPS = 1.0, 1e-3
BETA_MIN, BETA_MAX = 0.1, 20.0


def alpha_sigma(t):
    """VP's α(t), σ(t) for a float or a tensor t."""
    log_alpha = -0.25 * t * t * (BETA_MAX - BETA_MIN) - 0.5 * t * BETA_MIN
    if isinstance(t, torch.Tensor):
        alpha = torch.exp(log_alpha)
        sigma = torch.sqrt(-torch.expm1(2.0 * log_alpha))
    else:
        alpha = math.exp(log_alpha)
        sigma = math.sqrt(-math.expm1(2.0 * log_alpha))
    return alpha, sigma


def beta(t):
    return BETA_MIN + t * (BETA_MAX - BETA_MIN)


class Mlp(torch.nn.Module):
    """sdeflow's `mlp`: embedding, SiLU hidden layers, linear output, split first layer."""

    def __init__(self, dim=2, hidden=256, layers=3, embed_dim=128, max_period=10_000.0):
        super().__init__()
        half = embed_dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64) / half)
        self.register_buffer("freqs", freqs.float())
        self.first_x = torch.nn.Linear(dim, hidden, bias=False)
        self.first_e = torch.nn.Linear(embed_dim, hidden)
        self.hidden = torch.nn.ModuleList(
            torch.nn.Linear(hidden, hidden) for _ in range(layers - 1)
        )
        self.out = torch.nn.Linear(hidden, dim)

    def embedding(self, c):
        """e(c) = [sin(c ω), cos(c ω)] of `c`, a [n] tensor."""
        arg = c[:, None] * self.freqs[None, :]
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)

    def forward(self, x, c):
        # c: one level for the whole batch ([1]) or one per row ([n]).
        shift = self.first_e(self.embedding(c))
        h = torch.nn.functional.silu(self.first_x(x) + shift)
        for layer in self.hidden:
            h = torch.nn.functional.silu(layer(h))
        return self.out(h)


def sample(model, x, nfe):
    """Euler on VP's PF-ODE reading the network as ε: nfe uniform steps from T to t_ε."""
    ts = [T_MAX + (T_EPS - T_MAX) * i / nfe for i in range(nfe + 1)]
    for t, s in zip(ts[:-1], ts[1:]):
        alpha, sigma = alpha_sigma(t)
        c = torch.full((1,), math.log(alpha / sigma), dtype=x.dtype)
        eps = model(x, c)
        # dx/dt = f x − ½ g² ∇log p = −½ β x + ½ β ε̂ / σ
        b = beta(t)
        x = x + (s - t) * (-0.5 * b) * (x - eps / sigma)
    return x


def ring_rows(n, gen):
    k = torch.randint(0, 8, (n,), generator=gen)
    angle = k.float() * (2.0 * math.pi / 8.0)
    means = 3.0 * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return means + 0.15 * torch.randn(n, 2, generator=gen)


class Trainer:
    def __init__(self, model, batch, seed=0):
        self.model = model
        self.batch = batch
        self.gen = torch.Generator().manual_seed(seed)
        self.opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
        self.params = [p for p in model.parameters()]
        self.ema = [p.detach().clone() for p in self.params]

    def step(self):
        n, gen = self.batch, self.gen
        x0 = ring_rows(n, gen)
        t = T_EPS + (T_MAX - T_EPS) * torch.rand(n, generator=gen)
        eps = torch.randn(n, 2, generator=gen)
        alpha, sigma = alpha_sigma(t)
        xt = alpha[:, None] * x0 + sigma[:, None] * eps
        c = torch.log(alpha / sigma)
        loss = ((self.model(xt, c) - eps) ** 2).sum(dim=1).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(self.ema, self.params, 1.0 - 0.999)
        return loss


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["sample", "train"])
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--nfe", type=int, default=100, help="sample: steps (= NFE)")
    ap.add_argument("--steps", type=int, default=100, help="train: steps per timed repeat")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=1, help="untimed repeats first")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    model = Mlp()
    times = []
    if args.mode == "sample":
        model.eval()
        x = torch.randn(args.batch, 2, generator=torch.Generator().manual_seed(1))
        with torch.inference_mode():
            for i in range(args.warmup + args.repeats):
                start = time.perf_counter()
                out = sample(model, x, args.nfe)
                elapsed = time.perf_counter() - start
                if not torch.isfinite(out).all():
                    sys.exit("torch sampling gave non-finite values")
                if i >= args.warmup:
                    times.append(elapsed)
    else:
        trainer = Trainer(model, args.batch)
        for _ in range(5):
            trainer.step()  # warm-up: allocations, caches
        for i in range(args.warmup + args.repeats):
            start = time.perf_counter()
            for _ in range(args.steps):
                loss = trainer.step()
            elapsed = time.perf_counter() - start
            if not torch.isfinite(loss):
                sys.exit("torch training gave a non-finite loss")
            if i >= args.warmup:
                times.append(elapsed)
    print(
        json.dumps(
            {
                "mode": args.mode,
                "threads": args.threads,
                "interop_threads": torch.get_num_interop_threads(),
                "batch": args.batch,
                "nfe": args.nfe if args.mode == "sample" else None,
                "steps": args.steps if args.mode == "train" else None,
                "times": times,
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
