#!/usr/bin/env python3
"""Peer samplers on an exact score: diffusers and k-diffusion, side by side with sdeflow.

    python peers.py DIR              reads DIR/problem.json, writes DIR/peers.json and the samples
    python peers.py --rescore DIR    runs the candidates `peers select` chose on the fresh start sets
    python peers.py --self-test      checks the exact denoiser against closed forms
    python peers.py --agree DIR      large-budget agreement of every deterministic sampler with a
                                     reference solve of the probability-flow ODE (DIR/agree.json)
    python peers.py --demo-problem DIR   writes a problem.json (+ starts) of the shape the Rust side
                                     writes, for running this file on its own

Run it with the virtualenv that xtask/peers/setup.sh makes (target/peers-venv/bin/python).

The problem (see README of the benchmark): DDPM's discrete VP schedule (linear betas, ᾱ_k =
Π_{j≤k}(1 − β_j), α = √ᾱ, σ = √(1 − ᾱ), σ̃ = σ/α); data = a Gaussian mixture Σ w_k N(μ_k, Σ_k);
`starts.npy` = exact samples at train timestep 999 in VP scale. Every sampler starts from those
points (in its own scale: x̃ = x/α for the σ̃-space samplers) and ends at σ̃ = sigma_min (train
timestep 0), where its samples are written back in VP scale (x = alpha_min · x̃).

The model is exact: at noise level σ̃ the noised law is Σ w_k N(μ_k, Σ_k + σ̃² I), so the score,
the denoiser D(x̃, σ̃) = x̃ + σ̃² ∇log p̃(x̃) and the VP noise prediction ε̂(x) = −σ̃ ∇log p̃(x/α) have
closed forms (float64 throughout). Each call on the whole batch counts one NFE. The wrappers
give the prediction at exactly the noise level the sampler assumes: k-diffusion passes σ̃; for
diffusers the σ̃ is read from the scheduler's own state (its `sigmas[step_index]`, its
interpolated midpoint σ̃, or its `alphas_cumprod` at the integer timestep), never inverted from
the (possibly rounded or fractional) timestep it passes to the model.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import re
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

warnings.filterwarnings("ignore")
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("PEERS_THREADS", "2")))

LOG_2PI = math.log(2.0 * math.pi)


@contextlib.contextmanager
def default_dtype(dt):
    """k-diffusion runs with float64 as torch's default dtype, so that its sigma lists (torch.linspace)
    and scalars are float64; diffusers keeps float32 (UniPC breaks otherwise: it mixes torch.tensor()
    and float32 buffers in one linalg.solve)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dt)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# The schedule and the exact model
# ---------------------------------------------------------------------------------------------


@dataclass
class Schedule:
    """DDPM's discrete VP schedule in float64."""

    num_train_timesteps: int
    beta_start: float
    beta_end: float
    beta_schedule: str = "linear"

    def __post_init__(self):
        if self.beta_schedule == "linear":
            betas = np.linspace(self.beta_start, self.beta_end, self.num_train_timesteps, dtype=np.float64)
        elif self.beta_schedule == "scaled_linear":
            betas = np.linspace(self.beta_start**0.5, self.beta_end**0.5, self.num_train_timesteps) ** 2
        else:
            raise ValueError(f"beta_schedule {self.beta_schedule!r} is not supported here")
        self.betas = betas
        self.alphas_cumprod = np.cumprod(1.0 - betas)
        self.sigma_tilde = np.sqrt((1.0 - self.alphas_cumprod) / self.alphas_cumprod)  # index = train timestep
        self.alpha = np.sqrt(self.alphas_cumprod)

    @property
    def sigma_max(self) -> float:
        return float(self.sigma_tilde[-1])

    @property
    def sigma_min(self) -> float:
        return float(self.sigma_tilde[0])

    def diffusers_kwargs(self) -> dict:
        return dict(
            num_train_timesteps=self.num_train_timesteps,
            beta_start=self.beta_start,
            beta_end=self.beta_end,
            beta_schedule=self.beta_schedule,
        )


class Mixture:
    """Σ_k w_k N(μ_k, Σ_k) with full covariances; its noised laws in closed form."""

    def __init__(self, weights, means, covs):
        self.w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        self.mu = torch.as_tensor(np.asarray(means, dtype=np.float64))
        self.cov = torch.as_tensor(np.asarray(covs, dtype=np.float64))
        k, d = self.mu.shape
        assert self.w.shape == (k,) and self.cov.shape == (k, d, d)
        self.k, self.d = k, d
        self.logw = torch.log(self.w / self.w.sum())
        self.eye = torch.eye(d, dtype=torch.float64)
        self._cache_sigma = None

    def _noised(self, s: float):
        """(C_k⁻¹, log det C_k) for C_k = Σ_k + s² I, cached for the last s."""
        if self._cache_sigma != s:
            c = self.cov + (s * s) * self.eye
            chol = torch.linalg.cholesky(c)
            prec = torch.cholesky_inverse(chol)
            logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
            # C_k⁻¹ side by side as one d × (k d) matrix (C_k⁻¹ is symmetric), and C_k⁻¹ μ_k
            stacked = prec.permute(1, 0, 2).reshape(self.d, self.k * self.d)
            prec_mu = torch.einsum("kde,ke->kd", prec, self.mu)
            const = self.logw - 0.5 * (logdet + self.d * LOG_2PI)
            self._cache = (stacked, prec_mu, const)
            self._cache_sigma = s
        return self._cache

    def score_and_logp(self, x: torch.Tensor, s: float):
        """∇ log p̃_s(x) and log p̃_s(x) for x [n, d] at VE noise level s (p̃_s = p * N(0, s² I))."""
        stacked, prec_mu, const = self._noised(float(s))
        x = x.to(torch.float64)
        sol = (x @ stacked).view(-1, self.k, self.d) - prec_mu[None]  # n k d: C_k⁻¹ (x − μ_k)
        diff = x[:, None, :] - self.mu[None, :, :]
        quad = torch.einsum("nkd,nkd->nk", diff, sol)
        logn = const[None, :] - 0.5 * quad
        logp = torch.logsumexp(logn, dim=1)
        resp = torch.exp(logn - logp[:, None])  # n k responsibilities
        score = -torch.einsum("nk,nkd->nd", resp, sol)
        return score, logp

    def score(self, x, s):
        return self.score_and_logp(x, s)[0]

    def logp(self, x, s):
        return self.score_and_logp(x, s)[1]

    def denoise(self, x, s):
        """D(x̃, σ̃) = E[x₀ | x̃] = x̃ + σ̃² ∇ log p̃(x̃)."""
        return x + (s * s) * self.score(x, s)

    def eps_vp(self, x_vp, s):
        """ε̂ in VP scale at σ̃ = s: α = 1/√(1 + s²), x̃ = x/α, ε̂ = −σ̃ ∇ log p̃(x̃)."""
        return -s * self.score(x_vp * math.sqrt(1.0 + s * s), s)

    def sample(self, n: int, gen: np.random.Generator) -> np.ndarray:
        comp = gen.choice(self.k, size=n, p=(self.w / self.w.sum()).numpy())
        chol = np.linalg.cholesky(self.cov.numpy())
        z = gen.standard_normal((n, self.d))
        return self.mu.numpy()[comp] + np.einsum("nde,ne->nd", chol[comp], z)


class BudgetExceeded(Exception):
    pass


class Counted:
    """The exact model behind an NFE counter: one call on the batch = 1 NFE."""

    def __init__(self, mixture: Mixture, limit: int | None = None):
        self.m = mixture
        self.nfe = 0
        self.limit = limit
        self.sigmas: list[float] = []

    def _tick(self, s):
        self.nfe += 1
        self.sigmas.append(float(s))
        if self.limit is not None and self.nfe > self.limit:
            raise BudgetExceeded()

    def denoise(self, x, s):
        self._tick(s)
        return self.m.denoise(x, s)

    def eps_vp(self, x, s):
        self._tick(s)
        return self.m.eps_vp(x, s)


# ---------------------------------------------------------------------------------------------
# Self-test
# ---------------------------------------------------------------------------------------------


def self_test() -> int:
    gen = np.random.default_rng(1)
    failures = []

    def check(name, err, tol):
        ok = err <= tol
        log(f"{'ok ' if ok else 'FAIL'} {name}: {err:.3e} (tol {tol:.0e})")
        if not ok:
            failures.append(name)

    for d in (1, 2, 5, 8):
        a = gen.standard_normal((d, d))
        cov = a @ a.T / d + 0.05 * np.eye(d)
        mu = gen.standard_normal(d)
        one = Mixture([1.0], [mu], [cov])
        x = torch.as_tensor(gen.standard_normal((64, d)) * 3)
        for s in (0.0100005, 0.3, 2.0, 157.4):
            got = one.denoise(x, s).numpy()
            c = cov + s * s * np.eye(d)
            want = mu + (cov @ np.linalg.solve(c, (x.numpy() - mu).T)).T
            err = np.abs(got - want).max() / max(1.0, np.abs(want).max())
            check(f"single Gaussian denoiser = μ + Σ(Σ + σ̃²I)⁻¹(x̃ − μ), d={d}, σ̃={s}", err, 1e-12)
    # VP ε̂ round trip: x = α x̂₀ + σ ε̂ with x̂₀ = D(x/α, σ̃)
    k, d = 5, 3
    means = gen.standard_normal((k, d)) * 2
    covs = []
    for _ in range(k):
        a = gen.standard_normal((d, d))
        covs.append(a @ a.T / d * 0.2 + 0.01 * np.eye(d))
    mix = Mixture(gen.dirichlet(np.ones(k)), means, np.array(covs))
    for s in (0.0100005, 0.5, 157.4):
        alpha = 1.0 / math.sqrt(1.0 + s * s)
        sig = s * alpha
        x = torch.as_tensor(gen.standard_normal((200, d)))
        eps = mix.eps_vp(x, s)
        x0 = mix.denoise(x / alpha, s)
        err = (x - (alpha * x0 + sig * eps)).abs().max().item()
        check(f"VP ε̂ round trip x = α D(x/α) + σ ε̂ at σ̃={s}", err, 1e-12)
        # and against the VP score: ε̂ = −σ ∇_x log p_vp(x), p_vp(x) = p̃(x/α)/α^d
        xr = x.clone().requires_grad_(True)
        lp = mix.logp(xr / alpha, s).sum()
        (g,) = torch.autograd.grad(lp, xr)
        err = (eps + sig * g).abs().max().item() / max(1.0, eps.abs().max().item())
        check(f"ε̂ = −σ ∇ log p_vp (autograd) at σ̃={s}", err, 1e-12)
    # the mixture's score against central differences of its log-density
    for s in (0.0100005, 0.05, 1.0, 30.0):
        x = torch.as_tensor(gen.standard_normal((50, d)) * 2)
        sc = mix.score(x, s)
        h = 1e-5 * max(1.0, s)
        fd = torch.zeros_like(x)
        for j in range(d):
            e = torch.zeros(d)
            e[j] = h
            fd[:, j] = (mix.logp(x + e, s) - mix.logp(x - e, s)) / (2 * h)
        err = ((sc - fd).abs() / (1.0 + sc.abs())).max().item()
        check(f"mixture score = finite differences of log p̃ at σ̃={s}", err, 1e-6)
    # log-density normalised: a 1-D mixture integrates to 1
    m1 = Mixture([0.3, 0.7], [[-1.0], [2.0]], [[[0.04]], [[0.25]]])
    grid = torch.linspace(-8, 10, 200001)[:, None]
    mass = torch.trapezoid(torch.exp(m1.logp(grid, 0.1)), grid[:, 0]).item()
    check("1-D mixture density integrates to 1", abs(mass - 1.0), 1e-9)
    # the schedule's ends
    sch = Schedule(1000, 1e-4, 0.02)
    check("σ̃ at timestep 0 = √(β₀/(1 − β₀))", abs(sch.sigma_min - math.sqrt(1e-4 / (1 - 1e-4))), 1e-15)
    log(f"{len(failures)} failed" if failures else "self-test passed")
    return 1 if failures else 0


# ---------------------------------------------------------------------------------------------
# The problem
# ---------------------------------------------------------------------------------------------


@dataclass
class Problem:
    dir: Path
    schedule: Schedule
    sigma_max: float
    sigma_min: float
    alpha_max: float
    alpha_min: float
    budgets: list[int]
    seed: int
    mixtures: list[dict]

    @staticmethod
    def load(d: Path) -> "Problem":
        p = json.loads((d / "problem.json").read_text())
        sch = Schedule(**p["schedule"])
        prob = Problem(d, sch, float(p["sigma_max"]), float(p["sigma_min"]), float(p["alpha_max"]),
                       float(p["alpha_min"]), [int(b) for b in p["budgets"]], int(p.get("seed", 0)), p["mixtures"])
        for name, got, want in (("sigma_max", prob.sigma_max, sch.sigma_max), ("sigma_min", prob.sigma_min, sch.sigma_min),
                                ("alpha_max", prob.alpha_max, float(sch.alpha[-1])), ("alpha_min", prob.alpha_min, float(sch.alpha[0]))):
            if abs(got / want - 1) > 1e-9:
                raise SystemExit(f"problem.json: {name} = {got!r} but the schedule gives {want!r}")
        return prob


def demo_problem(d: Path, n: int = 20000):
    """A problem.json of the Rust side's shape: the 2-D 8-mode ring and an 8-D 6-component mixture."""
    sch = Schedule(1000, 1e-4, 0.02)
    gen = np.random.default_rng(0)
    ang = 2 * np.pi * np.arange(8) / 8
    ring = dict(name="ring", dim=2, weights=[1 / 8] * 8, means=(3 * np.stack([np.cos(ang), np.sin(ang)], 1)).tolist(),
                covs=[(0.15**2 * np.eye(2)).tolist()] * 8)
    covs = []
    for _ in range(6):
        a = gen.standard_normal((8, 8))
        covs.append((a @ a.T / 8 * 0.1 + 0.02 * np.eye(8)).tolist())
    w = gen.dirichlet(np.ones(6) * 3)
    mix8 = dict(name="gmm8", dim=8, weights=w.tolist(), means=(gen.standard_normal((6, 8)) * 2).tolist(), covs=covs)
    mixtures = []
    for m in (ring, mix8):
        mm = Mixture(m["weights"], m["means"], m["covs"])
        x0 = mm.sample(n, gen)
        a, s = float(sch.alpha[-1]), math.sqrt(1 - sch.alphas_cumprod[-1])
        xt = a * x0 + s * gen.standard_normal(x0.shape)
        (d / m["name"]).mkdir(parents=True, exist_ok=True)
        np.save(d / m["name"] / "starts.npy", xt)
        mixtures.append({**m, "starts": f"{m['name']}/starts.npy"})
    prob = dict(schedule=dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear"),
                sigma_max=sch.sigma_max, sigma_min=sch.sigma_min, alpha_max=float(sch.alpha[-1]),
                alpha_min=float(sch.alpha[0]), budgets=[5, 10, 20, 50], seed=0, mixtures=mixtures)
    (d / "problem.json").write_text(json.dumps(prob, indent=1))
    log(f"wrote {d / 'problem.json'}")


# ---------------------------------------------------------------------------------------------
# Samplers: a spec is one (library, sampler, schedule); run(model, x_vp, steps, seed) → x_vp at σ_min
# ---------------------------------------------------------------------------------------------


@dataclass
class Spec:
    library: str
    sampler: str
    schedule: str
    slug: str
    stochastic: bool
    run: Callable  # (prob, model: Counted, x_vp: Tensor, steps: int, seed: int) -> Tensor (VP scale at σ_min)
    fixed_steps: int | None = None  # a fixed list (align-your-steps): only this step count
    note: str = ""


class NotAtSigmaMin(Exception):
    pass


# ---- k-diffusion ----------------------------------------------------------------------------


def kd_sigmas(prob: Problem, kind: str, n_points: int) -> torch.Tensor:
    """n_points noise levels from sigma_max to sigma_min, no zero appended."""
    import k_diffusion.sampling as ks
    import k_diffusion.external as ke

    smin, smax = prob.sigma_min, prob.sigma_max
    if kind.startswith("karras"):
        rho = float(kind.split("-")[1]) if "-" in kind else 7.0
        s = ks.get_sigmas_karras(n_points, smin, smax, rho=rho)
    elif kind == "exponential":
        s = ks.get_sigmas_exponential(n_points, smin, smax)
    elif kind.startswith("polyexponential"):
        rho = float(kind.split("-")[1])
        s = ks.get_sigmas_polyexponential(n_points, smin, smax, rho=rho)
    elif kind == "discrete":
        # the model's own discrete schedule, time-uniform (k-diffusion's DiscreteSchedule.get_sigmas)
        ds = ke.DiscreteSchedule(torch.as_tensor(prob.schedule.sigma_tilde), quantize=False)
        s = ds.get_sigmas(n_points)
    else:
        raise ValueError(kind)
    s = s[:-1].to(torch.float64)  # drop the appended zero
    assert len(s) == n_points and s[-1] > 0
    # pin the ends exactly (the formulas reproduce them up to rounding)
    s[0], s[-1] = smax, smin
    return s


def kd_spec(fn_name: str, label: str, sched: str, slug: str, stochastic=False, steps_to_points=lambda n: n + 1,
            **kw) -> Spec:
    def run(prob: Problem, model: Counted, x_vp: torch.Tensor, steps: int, seed: int):
        import k_diffusion.sampling as ks

        with default_dtype(torch.float64):
            return _run(ks, prob, model, x_vp, steps, seed)

    def _run(ks, prob, model, x_vp, steps, seed):
        fn = getattr(ks, fn_name)
        sig = kd_sigmas(prob, sched, steps_to_points(steps))
        x = x_vp / prob.alpha_max
        den = lambda x, s: model.denoise(x, float(s.reshape(-1)[0]))  # noqa: E731  (σ̃ is the same for the batch)
        torch.manual_seed(seed)
        extra = dict(kw)
        if extra.pop("brownian_tree", False):
            # sample_dpmpp_sde draws the noise of a half step and of the whole step: nested increments of
            # one Brownian path, so it keeps k-diffusion's Brownian tree (seeded). The one-increment-per-
            # step samplers (2m_sde, 3m_sde) get k-diffusion's default_noise_sampler (torch.randn_like
            # after torch.manual_seed(seed)): independent N(0, I) increments, the same law as the tree's
            # non-overlapping increments, at a fraction of its cost.
            extra["noise_sampler"] = ks.BrownianTreeNoiseSampler(x, prob.sigma_min, prob.sigma_max, seed=seed)
        elif fn_name in ("sample_dpmpp_2m_sde", "sample_dpmpp_3m_sde"):
            extra["noise_sampler"] = ks.default_noise_sampler(x)
        out = fn(den, x, sig, disable=True, **extra)
        return out * prob.alpha_min

    return Spec("k-diffusion", label, sched, slug, stochastic, run)


def kd_dpm_fast_spec() -> Spec:
    def run(prob, model, x_vp, steps, seed):
        import k_diffusion.sampling as ks

        x = x_vp / prob.alpha_max
        den = lambda x, s: model.denoise(x, float(s.reshape(-1)[0]))  # noqa: E731
        with default_dtype(torch.float64):
            out = ks.sample_dpm_fast(den, x, prob.sigma_min, prob.sigma_max, steps, disable=True)
        return out * prob.alpha_min

    return Spec("k-diffusion", "sample_dpm_fast (DPM-Solver-fast, orders 3/2/1)", "logsnr", "dpm_fast-logsnr", False, run,
                note="steps = NFE; log-SNR-uniform steps")


def kdiffusion_specs() -> list[Spec]:
    det_scheds = ["karras-7", "karras-5", "karras-3", "exponential", "polyexponential-2", "discrete"]
    sto_scheds = ["karras-7", "exponential"]
    specs = []
    det = [
        ("sample_euler", "sample_euler", {}),
        ("sample_heun", "sample_heun", {}),
        ("sample_dpm_2", "sample_dpm_2", {}),
        ("sample_lms", "sample_lms (order 4)", {}),
        ("sample_dpmpp_2m", "sample_dpmpp_2m", {}),
        ("sample_dpmpp_2s_ancestral", "sample_dpmpp_2s_ancestral(eta=0) (deterministic 2S)", {"eta": 0.0}),
        ("sample_dpmpp_2m_sde", "sample_dpmpp_2m_sde(eta=0, midpoint)", {"eta": 0.0}),
        ("sample_dpmpp_2m_sde", "sample_dpmpp_2m_sde(eta=0, heun)", {"eta": 0.0, "solver_type": "heun"}),
        ("sample_dpmpp_3m_sde", "sample_dpmpp_3m_sde(eta=0) (deterministic 3M)", {"eta": 0.0}),
    ]
    for fn, label, kw in det:
        for sc in det_scheds:
            tag = re.sub(r"[^a-z0-9]+", "_", label.lower().replace("sample_", "")).strip("_")
            specs.append(kd_spec(fn, label, sc, f"{tag}-{sc}", **kw))
    specs.append(kd_dpm_fast_spec())
    sto = [
        ("sample_euler_ancestral", "sample_euler_ancestral(eta=1)", {"eta": 1.0}),
        ("sample_dpmpp_2s_ancestral", "sample_dpmpp_2s_ancestral(eta=1)", {"eta": 1.0}),
        ("sample_dpmpp_sde", "sample_dpmpp_sde(eta=1)", {"eta": 1.0, "brownian_tree": True}),
        ("sample_dpmpp_2m_sde", "sample_dpmpp_2m_sde(eta=1, midpoint)", {"eta": 1.0}),
        ("sample_dpmpp_2m_sde", "sample_dpmpp_2m_sde(eta=1, heun)", {"eta": 1.0, "solver_type": "heun"}),
        ("sample_dpmpp_3m_sde", "sample_dpmpp_3m_sde(eta=1)", {"eta": 1.0}),
    ]
    for fn, label, kw in sto:
        for sc in sto_scheds:
            tag = re.sub(r"[^a-z0-9]+", "_", label.lower().replace("sample_", "")).strip("_")
            specs.append(kd_spec(fn, label, sc, f"{tag}-{sc}", stochastic=True, **kw))
    return specs


# ---- diffusers ------------------------------------------------------------------------------

# How each scheduler class represents its sample and which σ̃ it assumes for a model call.
VE_SPACE = {"EulerDiscreteScheduler", "HeunDiscreteScheduler", "LMSDiscreteScheduler", "KDPM2DiscreteScheduler",
            "EulerAncestralDiscreteScheduler", "DPMSolverSDEScheduler", "EDMEulerScheduler",
            "EDMDPMSolverMultistepScheduler"}
ALPHA_INDEXED = {"DDIMScheduler", "PNDMScheduler", "DDPMScheduler"}  # σ̃ from alphas_cumprod[timestep]
TWO_STAGE = {"HeunDiscreteScheduler", "KDPM2DiscreteScheduler", "DPMSolverSDEScheduler"}
EDM = {"EDMEulerScheduler", "EDMDPMSolverMultistepScheduler"}


def _f(t) -> float:
    return float(t.item() if hasattr(t, "item") else t)


def _sig_from_alpha_bar(ab: float) -> float:
    return math.sqrt((1.0 - ab) / ab)


def _cur_index(sched) -> int:
    if sched.step_index is not None:
        return sched.step_index
    bi = getattr(sched, "begin_index", None)
    return 0 if bi is None else bi


def model_sigma(sched, t) -> float:
    """The σ̃ the scheduler assumes for the model call it is about to make at timestep t."""
    name = type(sched).__name__
    if name in ALPHA_INDEXED:
        return _sig_from_alpha_bar(_f(sched.alphas_cumprod[int(_f(t))]))
    i = _cur_index(sched)
    if name == "KDPM2DiscreteScheduler" and not sched.state_in_first_order:
        return _f(sched.sigmas_interpol[i])
    if name == "DPMSolverSDEScheduler" and not sched.state_in_first_order:
        # its second stage is evaluated at the midpoint σ it stores (see its step())
        return _f(sched.mid_point_sigma)
    return _f(sched.sigmas[i])


def state_sigma(sched) -> float | None:
    """σ̃ of the current sample between whole steps (None mid-step or where not tracked)."""
    name = type(sched).__name__
    if name in ALPHA_INDEXED:
        return None
    if name in TWO_STAGE and not sched.state_in_first_order:
        return None
    return _f(sched.sigmas[_cur_index(sched)])


def end_sigma(sched, last_t) -> float:
    """σ̃ of the sample the scheduler returns after its final step (or after we stopped it)."""
    name = type(sched).__name__
    if name == "DDPMScheduler":
        return _f(sched.sigmas_state)  # set by our loop (truncated at timestep 0)
    if name in ALPHA_INDEXED:
        ratio = sched.config.num_train_timesteps // sched.num_inference_steps
        prev = int(_f(last_t)) - ratio
        ab = _f(sched.alphas_cumprod[prev]) if prev >= 0 else _f(sched.final_alpha_cumprod)
        return _sig_from_alpha_bar(ab) if ab < 1 else 0.0
    return _f(sched.sigmas[_cur_index(sched)])


def diffusers_spec(cls_name: str, label: str, sched_label: str, slug: str, kwargs: dict, *, stochastic=False,
                   timesteps: list[int] | None = None, step_kwargs: dict | None = None, note: str = "") -> Spec:
    def run(prob: Problem, model: Counted, x_vp: torch.Tensor, steps: int, seed: int):
        import diffusers

        cls = getattr(diffusers, cls_name)
        kw = dict(kwargs)
        if cls_name not in EDM:
            kw.update(prob.schedule.diffusers_kwargs())
        else:
            kw.update(sigma_min=prob.sigma_min, sigma_max=prob.sigma_max)
        if cls_name == "DPMSolverSDEScheduler":
            kw["noise_sampler_seed"] = seed
        sched = cls(**kw)
        if timesteps is not None:
            sched.set_timesteps(timesteps=list(timesteps))
        else:
            sched.set_timesteps(steps)
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(0)
        # the scheduler's own σ̃ at train timestep 0 (float32 ᾱ) and at its first timestep
        own_min = (_sig_from_alpha_bar(_f(sched.alphas_cumprod[0])) if hasattr(sched, "alphas_cumprod")
                   else prob.sigma_min)
        ve = cls_name in VE_SPACE
        x = x_vp / prob.alpha_max if ve else x_vp.clone()
        gen = torch.Generator().manual_seed(seed)
        skw = dict(step_kwargs or {})
        if stochastic and cls_name not in ("DPMSolverSDEScheduler",):
            skw["generator"] = gen
        last_t = None
        ts = sched.timesteps
        if cls_name == "DDPMScheduler":
            sched.sigmas_state = _sig_from_alpha_bar(_f(sched.alphas_cumprod[int(_f(ts[0]))]))
        first = True
        for t in ts:
            st = state_sigma(sched)
            if st is not None and abs(st / own_min - 1) < 1e-6:
                break  # the sample is at σ_min: what is left is a zero-length step or a step to σ = 0
            if cls_name == "DDPMScheduler" and int(_f(t)) == 0:
                break  # the sample is at timestep 0; its step would denoise to σ = 0
            inp = sched.scale_model_input(x, t)
            s = model_sigma(sched, t)
            if first:
                if abs(s / prob.sigma_max - 1) > 1e-6:
                    raise NotAtSigmaMin(f"first noise level {s:.6g} is not sigma_max {prob.sigma_max:.6g}")
                first = False
            if cls_name in EDM:
                c_in = 1.0 / math.sqrt(s * s + sched.config.sigma_data**2)
                xt = inp / c_in
                d = model.denoise(xt, s)
                sd = sched.config.sigma_data
                c_skip = sd**2 / (s * s + sd**2)
                c_out = s * sd / math.sqrt(s * s + sd**2)
                out = (d - c_skip * xt) / c_out
            else:
                out = model.eps_vp(inp, s)  # inp is VP x: Euler-type schedulers scale x̃ by 1/√(σ̃² + 1)
            x = sched.step(out, t, x, **skw).prev_sample
            last_t = t
            if cls_name == "DDPMScheduler":
                nxt = sched.previous_timestep(t)
                nxt = int(_f(nxt))
                sched.sigmas_state = _sig_from_alpha_bar(_f(sched.alphas_cumprod[nxt])) if nxt >= 0 else 0.0
        if last_t is None:
            raise NotAtSigmaMin("no step taken")
        e = end_sigma(sched, last_t)
        if abs(e / own_min - 1) > 1e-6:
            raise NotAtSigmaMin(f"ends at sigma {e:.6g}, not sigma_min {own_min:.6g}")
        x = x.to(torch.float64)
        return x * prob.alpha_min if ve else x

    return Spec("diffusers", label, sched_label, slug, stochastic, run,
                fixed_steps=len(timesteps) if timesteps is not None else None, note=note)


def diffusers_specs() -> list[Spec]:
    from diffusers.schedulers.scheduling_utils import AysSchedules

    ays = {"ays-sd": AysSchedules["StableDiffusionTimesteps"], "ays-sdxl": AysSchedules["StableDiffusionXLTimesteps"]}
    sched_opts = {
        "default (linspace)": {},  # a scheduler without `timestep_spacing`: its own linspace-like timesteps
        "linspace": dict(timestep_spacing="linspace"),
        "trailing": dict(timestep_spacing="trailing"),
        "karras": dict(use_karras_sigmas=True),
        "exponential": dict(use_exponential_sigmas=True),
        "beta": dict(use_beta_sigmas=True),
        "lu": dict(use_lu_lambdas=True),
    }
    specs: list[Spec] = []

    def add(cls, label, slug, base, scheds, *, ays_ok=False, stochastic=False, finals=None, finals_on=None,
            step_kwargs=None):
        """One spec per schedule; `finals` (name → extra kwargs) variants only on the `finals_on` schedules."""
        finals = finals or {"": {}}
        for fname, fkw in finals.items():
            on = scheds if not fname else [sc for sc in scheds if finals_on is None or sc in finals_on]
            lab = label + (f", {fname}" if fname else "")
            lab = lab + ")" if lab.count("(") > lab.count(")") else lab
            fslug = f"{slug}-{fname.replace('=', '_')}" if fname else slug
            for sc in on:
                specs.append(diffusers_spec(cls, lab, sc, f"{fslug}-{sc.split()[0]}", {**base, **fkw, **sched_opts[sc]},
                                            stochastic=stochastic, step_kwargs=step_kwargs))
            if ays_ok and not fname:
                for an, ts in ays.items():
                    specs.append(diffusers_spec(cls, lab, an, f"{fslug}-{an}", {**base, **fkw}, stochastic=stochastic,
                                                timesteps=ts, step_kwargs=step_kwargs))

    all6 = ["linspace", "trailing", "karras", "exponential", "beta", "lu"]
    low_nfe = ["trailing", "karras", "exponential", "lu"]  # where the final-step options are tried
    finals_ms = {"": {}, "lower_order_final=False": {"lower_order_final": False},
                 "euler_at_final": {"euler_at_final": True}}
    sm = dict(final_sigmas_type="sigma_min")
    for order, stype in ((2, "midpoint"), (2, "heun"), (3, "midpoint")):
        lab = f"DPMSolverMultistepScheduler(dpmsolver++, order {order}" + (f", {stype}" if order == 2 else "")
        add("DPMSolverMultistepScheduler", lab, f"dpmpp_ms-{order}{stype[0] if order == 2 else ''}",
            dict(algorithm_type="dpmsolver++", solver_order=order, solver_type=stype, **sm), all6, ays_ok=True,
            finals=finals_ms, finals_on=low_nfe)
    for order in (2, 3):
        add("DPMSolverMultistepScheduler", f"DPMSolverMultistepScheduler(sde-dpmsolver++, order {order}",
            f"sde_dpmpp_ms-{order}", dict(algorithm_type="sde-dpmsolver++", solver_order=order, **sm),
            ["trailing", "karras", "exponential", "lu"], stochastic=True)
    for order in (2, 3):
        add("DPMSolverSinglestepScheduler", f"DPMSolverSinglestepScheduler(dpmsolver++, order {order}",
            f"dpmpp_ss-{order}", dict(algorithm_type="dpmsolver++", solver_order=order, **sm),
            ["default (linspace)", "karras", "exponential", "beta"],
            finals={"": {}, "lower_order_final=True": {"lower_order_final": True}}, finals_on=["karras", "exponential"])
    for st in ("bh1", "bh2"):
        for order in (2, 3):
            add("UniPCMultistepScheduler", f"UniPCMultistepScheduler({st}, order {order}", f"unipc-{st}-{order}",
                dict(solver_type=st, solver_order=order, **sm),
                ["linspace", "trailing", "karras", "exponential", "beta"],
                finals={"": {}, "lower_order_final=False": {"lower_order_final": False}},
                finals_on=["karras", "exponential"])
    for order in (2, 3):
        add("DEISMultistepScheduler", f"DEISMultistepScheduler(logrho, order {order}", f"deis-{order}",
            dict(solver_order=order), ["linspace", "trailing", "karras", "exponential", "beta"],
            finals={"": {}, "lower_order_final=False": {"lower_order_final": False}},
            finals_on=["karras", "exponential"])
    add("EulerDiscreteScheduler", "EulerDiscreteScheduler", "euler", dict(**sm),
        ["linspace", "trailing", "karras", "exponential", "beta"], ays_ok=True)
    add("HeunDiscreteScheduler", "HeunDiscreteScheduler", "heun", {}, ["linspace", "karras", "exponential", "beta"])
    add("KDPM2DiscreteScheduler", "KDPM2DiscreteScheduler", "kdpm2", {}, ["linspace", "karras", "exponential", "beta"])
    add("LMSDiscreteScheduler", "LMSDiscreteScheduler(order 4)", "lms", {}, ["linspace", "karras", "exponential", "beta"],
        step_kwargs={"order": 4})
    add("DDIMScheduler", "DDIMScheduler(eta=0)", "ddim", dict(set_alpha_to_one=False, clip_sample=False),
        ["linspace", "trailing"])
    add("PNDMScheduler", "PNDMScheduler(PLMS, skip_prk_steps)", "plms",
        dict(skip_prk_steps=True, set_alpha_to_one=False), ["linspace", "trailing"])
    add("PNDMScheduler", "PNDMScheduler(PRK + PLMS)", "pndm", dict(skip_prk_steps=False, set_alpha_to_one=False),
        ["linspace", "trailing"])
    add("SASolverScheduler", "SASolverScheduler(tau=0, predictor 3, corrector 4", "sasolver-ode-34",
        dict(predictor_order=3, corrector_order=4, tau_func=lambda t: 0), ["linspace", "karras", "exponential"])
    add("SASolverScheduler", "SASolverScheduler(tau=0, predictor 2, corrector 2", "sasolver-ode-22",
        dict(predictor_order=2, corrector_order=2, tau_func=lambda t: 0), ["linspace", "karras", "exponential"])
    for order in (2, 3):
        for sched_sigma in ("karras", "exponential"):
            specs.append(diffusers_spec(
                "EDMDPMSolverMultistepScheduler", f"EDMDPMSolverMultistepScheduler(dpmsolver++, order {order})",
                sched_sigma, f"edm_dpmpp-{order}-{sched_sigma}",
                dict(solver_order=order, sigma_schedule=sched_sigma, final_sigmas_type="sigma_min")))
    for sched_sigma in ("karras", "exponential"):
        specs.append(diffusers_spec("EDMEulerScheduler", "EDMEulerScheduler", sched_sigma, f"edm_euler-{sched_sigma}",
                                    dict(sigma_schedule=sched_sigma, final_sigmas_type="sigma_min")))
    # stochastic
    add("EulerAncestralDiscreteScheduler", "EulerAncestralDiscreteScheduler", "euler_a", {}, ["linspace"],
        stochastic=True)
    add("DDIMScheduler", "DDIMScheduler(eta=1)", "ddim_eta1", dict(set_alpha_to_one=False, clip_sample=False),
        ["trailing", "linspace"], stochastic=True, step_kwargs={"eta": 1.0})
    add("DDPMScheduler", "DDPMScheduler(fixed_small)", "ddpm", dict(clip_sample=False), ["linspace"], stochastic=True)
    add("DPMSolverSDEScheduler", "DPMSolverSDEScheduler", "dpmsolver_sde", {}, ["linspace", "karras"],
        stochastic=True)
    add("SASolverScheduler", "SASolverScheduler(default tau, predictor 3, corrector 4", "sasolver-sde-34",
        dict(predictor_order=3, corrector_order=4), ["linspace", "karras"], stochastic=True)
    return specs


DIFFUSERS_LEFT_OUT = [
    ("IPNDMScheduler", "a v-prediction solver on its own trigonometric schedule (σ from 1 down to exactly 0); the only way "
     "onto the DDPM schedule is `trained_betas` (a VP σ grid) stored in float32, where 1 − β² cancels and puts its "
     "first noise level about 1e-3 away from sigma_max: it cannot start from the given points"),
    ("CosineDPMSolverMultistepScheduler", "built for Stable Audio's continuous cosine/EDM σ with v-prediction; no DDPM "
     "schedule"),
    ("timestep_spacing=leading (every scheduler)", "its first timestep is below 999 (e.g. 900 at 10 steps), so the run "
     "would start from points at the wrong noise level"),
    ("AysSchedules sigma lists (StableDiffusionSigmas, ...)", "they start at σ̃ = 14.6 (SD's range), not sigma_max = "
     "157.4, and end at 0; the timestep lists (StableDiffusionTimesteps, StableDiffusionXLTimesteps) are used instead, "
     "at their 10 steps, with schedulers that accept `timesteps=`"),
    ("DDPMScheduler(timestep_spacing=trailing)", "its last step goes from timestep 99 to σ = 0; no state at sigma_min to "
     "stop at"),
    ("HeunDiscreteScheduler / KDPM2 / LMS / EulerAncestral (timestep_spacing=trailing)", "they always append σ = 0 and "
     "trailing spacing never visits timestep 0, so the run cannot end at sigma_min"),
    ("use_lu_lambdas with UniPC / DEIS / single-step / Heun-type schedulers", "not an option of those schedulers"),
    ("DPMSolverSinglestepScheduler(timestep_spacing=...)", "not an option of that scheduler (it has its own linspace-like "
     "timesteps, run as schedule 'default (linspace)')"),
]
KDIFF_LEFT_OUT = [
    ("sample_dpm_adaptive", "adaptive step size: its NFE is an outcome of rtol/atol, not a setting, so it cannot be held to "
     "a budget"),
    ("sample_dpm_2_ancestral", "the stochastic rows already cover ancestral sampling (euler_ancestral, dpmpp_2s_ancestral)"),
    ("get_sigmas_vp", "the continuous VP SDE's σ̃(t) (β_min 0.1, β_d 19.9), not this discrete schedule; its ends are "
     "not sigma_max/sigma_min"),
]


# ---------------------------------------------------------------------------------------------
# Budgets
# ---------------------------------------------------------------------------------------------


def count_nfe(spec: Spec, prob: Problem, mix: Mixture, x_small: torch.Tensor, steps: int, seed: int):
    model = Counted(mix)
    try:
        out = spec.run(prob, model, x_small, steps, seed)
    except NotAtSigmaMin as e:
        return None, f"steps={steps}: {e}"
    except Exception as e:  # a scheduler that cannot run this step count
        return None, f"steps={steps}: {type(e).__name__}: {e}"
    if not torch.isfinite(out).all():
        return None, f"steps={steps}: non-finite output"
    return model.nfe, None


def budgets_of(cache: dict) -> list[int]:
    return cache.get("__budgets__", [])


def choose_steps(spec: Spec, prob: Problem, mix: Mixture, x_small, budget: int, seed: int, cache: dict):
    """The largest step count whose counted NFE ≤ budget, counted by running on a few points.

    NFE grows with the step count: bisect for the largest n with NFE(n) ≤ budget among n ≤ budget + 2
    (a run may stop one step early), then walk down past step counts the sampler cannot run."""

    def probe(n):
        key = (spec.library, spec.slug, n)
        if key not in cache:
            cache[key] = count_nfe(spec, prob, mix, x_small, n, seed)
        return cache[key]

    if spec.fixed_steps is not None:
        nfe, err = probe(spec.fixed_steps)
        if nfe is None:
            return None, None, err
        if nfe > budget:
            return None, None, f"its fixed {spec.fixed_steps} steps take {nfe} NFE > {budget}"
        smaller = [b for b in budgets_of(cache) if nfe <= b < budget]
        if smaller:  # a fixed list runs once, at the smallest budget it fits
            return None, None, f"its fixed {spec.fixed_steps} steps ({nfe} NFE) already run at budget {min(smaller)}"
        return spec.fixed_steps, nfe, None
    lo, hi = 0, budget + 2  # invariant: the answer is in [lo, hi]
    why = None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        nfe, err = probe(mid)
        if nfe is None:  # cannot run here: look at the neighbours below
            why = why or err
            k = mid - 1
            while k > lo and probe(k)[0] is None:
                k -= 1
            if k <= lo:
                hi = mid - 1
                continue
            nfe, _ = probe(k)
            mid = k
        if nfe <= budget:
            lo = mid
        else:
            hi = mid - 1
    for n in range(lo, 0, -1):
        nfe, err = probe(n)
        if nfe is not None and nfe <= budget:
            return n, nfe, None
        why = why or err
    return None, None, why or f"no step count fits {budget} NFE"


# ---------------------------------------------------------------------------------------------
# Main run
# ---------------------------------------------------------------------------------------------


def quiet_diffusers():
    from diffusers.utils import logging as dlog

    dlog.set_verbosity_error()


def versions() -> dict:
    import diffusers
    from importlib.metadata import version

    return {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "k_diffusion": version("k-diffusion"), "numpy": np.__version__, "torchsde": version("torchsde"),
            "scipy": version("scipy")}


def all_specs(only: str | None) -> list[Spec]:
    specs = diffusers_specs() + kdiffusion_specs()
    if only:
        rx = re.compile(only)
        specs = [s for s in specs if rx.search(f"{s.library}/{s.slug}")]
    keys = [(s.library, s.slug) for s in specs]
    assert len(keys) == len(set(keys)), "duplicate slugs"
    return specs


def run_problem(d: Path, only: str | None, n_limit: int | None) -> int:
    prob = Problem.load(d)
    specs = all_specs(only)
    out = {"versions": versions(), "skipped": [], "rows": []}
    for lib, items in (("diffusers", DIFFUSERS_LEFT_OUT), ("k-diffusion", KDIFF_LEFT_OUT)):
        for name, why in items:
            out["skipped"].append({"library": lib, "sampler": name, "why": why})
    t_all = time.time()
    skipped_keys = set()
    cache: dict = {"__budgets__": list(prob.budgets)}  # NFE per (sampler, steps): the same for every mixture
    for m in prob.mixtures:
        mix = Mixture(m["weights"], m["means"], m["covs"])
        starts = np.load(d / m["starts"])
        if n_limit:
            starts = starts[:n_limit]
        assert starts.dtype == np.float64 and starts.shape[1] == m["dim"], starts.shape
        x_all = torch.as_tensor(starts)
        x_small = x_all[:4].clone()
        log(f"{m['name']}: {starts.shape[0]} points in {m['dim']}-D, {len(specs)} samplers x budgets {prob.budgets}")
        hashes: dict = {}
        t_mix = time.time()
        for spec in specs:
            t0 = time.time()
            done = []
            for b in prob.budgets:
                steps, nfe_small, why = choose_steps(spec, prob, mix, x_small, b, prob.seed, cache)
                if steps is None:
                    if "already run at budget" in why:
                        continue
                    key = (spec.library, spec.sampler, spec.schedule, b)
                    if key not in skipped_keys:
                        skipped_keys.add(key)
                        out["skipped"].append({"library": spec.library, "sampler": spec.sampler, "schedule": spec.schedule,
                                               "mixture": m["name"], "budget": b, "why": why})
                    continue
                model = Counted(mix, limit=b)
                try:
                    xs = spec.run(prob, model, x_all, steps, prob.seed)
                except BudgetExceeded:
                    raise SystemExit(f"BUG: {spec.slug} at {steps} steps went over {b} NFE on the full batch")
                if model.nfe != nfe_small or model.nfe > b:
                    raise SystemExit(f"BUG: {spec.slug} NFE {model.nfe} on the full batch vs {nfe_small} counted")
                xs = xs.detach().numpy().astype(np.float64)
                if not np.isfinite(xs).all():
                    out["skipped"].append({"library": spec.library, "sampler": spec.sampler, "schedule": spec.schedule,
                                           "mixture": m["name"], "budget": b, "why": "non-finite samples"})
                    continue
                hkey = (b, hashlib.sha1(xs.tobytes()).hexdigest())
                if hkey in hashes:
                    rel = hashes[hkey]  # bit-identical to an earlier row at this budget: share its file
                else:
                    rel = f"{m['name']}/{spec.library}/{spec.slug}-{b}.npy"
                    (d / rel).parent.mkdir(parents=True, exist_ok=True)
                    np.save(d / rel, xs)
                    hashes[hkey] = rel
                out["rows"].append({"mixture": m["name"], "library": spec.library, "sampler": spec.sampler,
                                    "schedule": spec.schedule, "budget": b, "nfe": model.nfe, "steps": steps,
                                    "stochastic": spec.stochastic, "samples": rel})
                done.append(f"{b}:{model.nfe}")
            log(f"  {spec.library:11s} {spec.slug:48s} nfe {' '.join(done) or '-':22s} {time.time() - t0:6.1f} s")
        log(f"{m['name']}: {time.time() - t_mix:.0f} s")
    (d / "peers.json").write_text(json.dumps(out, indent=1))
    log(f"wrote {d / 'peers.json'}: {len(out['rows'])} rows, {len(out['skipped'])} skipped, {time.time() - t_all:.0f} s")
    return 0


def rescore(d: Path) -> int:
    """Runs the candidates of DIR/rescore.json (each library's best SW2 rows on the scored set, chosen
    by `peers select`) again on the fresh start sets of problem.json, with noise seed k on set k, at
    the step count of their scored run; writes DIR/rescore-peers.json. The SW2 read there is out of
    sample: the choice among hundreds of rows no longer picks the luckiest noise."""
    prob = Problem.load(d)
    job = json.loads((d / "rescore.json").read_text())
    specs = {(s.library, s.sampler, s.schedule): s for s in all_specs(None)}
    mixes = {m["name"]: m for m in prob.mixtures}
    out = {"versions": versions(), "rows": []}
    t_all = time.time()
    for r in job["rows"]:
        spec = specs.get((r["library"], r["sampler"], r["schedule"]))
        if spec is None:
            raise SystemExit(f"rescore.json: no sampler {r['library']} / {r['sampler']} / {r['schedule']}")
        m = mixes[r["mixture"]]
        mix = Mixture(m["weights"], m["means"], m["covs"])
        fresh = m.get("fresh_starts") or []
        if len(fresh) != int(job["sets"]):
            raise SystemExit(f"problem.json: {m['name']} has {len(fresh)} fresh start sets, rescore.json wants {job['sets']}")
        b, steps = int(r["budget"]), int(r["steps"])
        for k, rel_starts in enumerate(fresh, start=1):
            x = torch.as_tensor(np.load(d / rel_starts))
            model = Counted(mix, limit=b)
            xs = spec.run(prob, model, x, steps, k).detach().numpy().astype(np.float64)
            if model.nfe != int(r["nfe"]):
                raise SystemExit(f"BUG: {spec.slug} at {steps} steps: NFE {model.nfe}, scored run {r['nfe']}")
            rel = f"rescore/{m['name']}/{spec.library}/{spec.slug}-{b}-{k}.npy"
            (d / rel).parent.mkdir(parents=True, exist_ok=True)
            np.save(d / rel, xs)
            out["rows"].append({"mixture": m["name"], "library": spec.library, "sampler": spec.sampler,
                                "schedule": spec.schedule, "budget": b, "set": k, "samples": rel})
        log(f"  {m['name']:5s} {spec.library:11s} {spec.slug:48s} nfe {b:3d}: {len(fresh)} fresh sets")
    (d / "rescore-peers.json").write_text(json.dumps(out, indent=1))
    log(f"wrote {d / 'rescore-peers.json'}: {len(out['rows'])} runs, {time.time() - t_all:.0f} s")
    return 0


# ---------------------------------------------------------------------------------------------
# Large-budget agreement with a reference PF-ODE solve
# ---------------------------------------------------------------------------------------------


def reference_endpoint(prob: Problem, mix: Mixture, x_vp: torch.Tensor, steps: int) -> torch.Tensor:
    """RK4 on dx̃/du = x̃ − D(x̃, e^u), u = log σ̃ from log sigma_max to log sigma_min; VP scale out."""
    u0, u1 = math.log(prob.sigma_max), math.log(prob.sigma_min)
    h = (u1 - u0) / steps
    x = x_vp / prob.alpha_max
    f = lambda x, u: x - mix.denoise(x, math.exp(u))  # noqa: E731
    u = u0
    for _ in range(steps):
        k1 = f(x, u)
        k2 = f(x + 0.5 * h * k1, u + 0.5 * h)
        k3 = f(x + 0.5 * h * k2, u + 0.5 * h)
        k4 = f(x + h * k3, u + h)
        x = x + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
        u += h
    return x * prob.alpha_min


def agree(d: Path, budgets: list[int], n: int, only: str | None) -> int:
    """Every deterministic sampler at large budgets against a reference solve of the PF-ODE.

    All of them approximate the same map from the starts at sigma_max to the PF-ODE's endpoint at
    sigma_min, so their error against the reference must shrink with the NFE at the method's order;
    a wrong σ̃ mapping or a wrong endpoint shows up as an error that does not shrink."""
    prob = Problem.load(d)
    specs = [s for s in all_specs(only) if not s.stochastic and s.fixed_steps is None]
    res = {"versions": versions(), "budgets": budgets, "n": n, "mixtures": {}}
    for m in prob.mixtures:
        if os.environ.get("PEERS_MIXTURE") and m["name"] != os.environ["PEERS_MIXTURE"]:
            continue
        mix = Mixture(m["weights"], m["means"], m["covs"])
        x = torch.as_tensor(np.load(d / m["starts"])[:n])
        t0 = time.time()
        ref = reference_endpoint(prob, mix, x, 4000)
        ref2 = reference_endpoint(prob, mix, x, 2000)
        ref_err = (ref - ref2).abs().max().item()
        log(f"{m['name']}: reference RK4 in log σ̃ (4000 vs 2000 steps differ by {ref_err:.1e}), {time.time() - t0:.0f} s")
        rows = []
        cache: dict = {}
        for spec in specs:
            row = {"library": spec.library, "sampler": spec.sampler, "schedule": spec.schedule, "runs": []}
            msg = []
            for b in budgets:
                steps, _, why = choose_steps_fast(spec, prob, mix, x[:2], b, prob.seed, cache)
                if steps is None:
                    row["runs"].append({"budget": b, "why": why})
                    msg.append(f"{b}: {why}")
                    continue
                model = Counted(mix)
                xs = spec.run(prob, model, x, steps, prob.seed)
                err = (xs - ref).abs()
                per_point = err.max(dim=1).values
                r = {"budget": b, "steps": steps, "nfe": model.nfe, "max_abs": err.max().item(),
                     "rms": err.pow(2).mean().sqrt().item(), "median": per_point.median().item(),
                     "p99": torch.quantile(per_point, 0.99).item(),
                     "points_off_by_1e-2": int((per_point > 1e-2).sum().item())}
                row["runs"].append(r)
                msg.append(f"nfe {model.nfe:5d} max {r['max_abs']:.2e} rms {r['rms']:.2e} med {r['median']:.1e} "
                           f"p99 {r['p99']:.1e} off {r['points_off_by_1e-2']}")
            ok = [r for r in row["runs"] if "rms" in r]
            if len(ok) >= 2 and ok[-1]["rms"] > 0:
                row["observed_order_rms"] = math.log(ok[0]["rms"] / ok[-1]["rms"]) / math.log(ok[-1]["nfe"] / ok[0]["nfe"])
                msg.append(f"order {row['observed_order_rms']:.2f}")
            rows.append(row)
            log(f"  {spec.library:11s} {spec.slug:44s} " + " | ".join(msg))
        res["mixtures"][m["name"]] = {"reference_4000_vs_2000": ref_err, "rows": rows}
    (d / "agree.json").write_text(json.dumps(res, indent=1))
    log(f"wrote {d / 'agree.json'}")
    return 0


def choose_steps_fast(spec, prob, mix, x_small, budget, seed, cache):
    """choose_steps for large budgets: NFE ≈ a·steps + b, so probe near budget/a instead of bisecting."""

    def probe(n):
        key = (spec.library, spec.slug, n)
        if key not in cache:
            cache[key] = count_nfe(spec, prob, mix, x_small, n, seed)
        return cache[key]

    why = None
    pts = []
    for g in (24, 25, 48, 49, 23, 47):
        nfe, err = probe(g)
        if nfe is None:
            why = why or err
            continue
        pts.append((g, nfe))
        if len(pts) == 2 and pts[1][0] - pts[0][0] > 10:
            break
        if len(pts) == 2:
            pts = pts[:1]
    if len(pts) < 2:
        return None, None, why
    (g1, n1), (g2, n2) = pts
    slope = (n2 - n1) / (g2 - g1)
    n = int((budget - n1) / slope) + g1 + 2
    for k in range(n, max(n - 12, 0), -1):
        nfe, err = probe(k)
        if nfe is None:
            why = why or err
            continue
        if nfe <= budget:
            return k, nfe, None
    return None, None, why or "no step count near the budget"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", nargs="?", type=Path)
    ap.add_argument("--self-test", action="store_true")
    ap.add_argument("--agree", action="store_true", help="large-budget agreement check on DIR")
    ap.add_argument("--agree-nfe", default="500,2000", help="comma-separated NFE budgets for --agree")
    ap.add_argument("--agree-n", type=int, default=1000, help="how many starts --agree uses")
    ap.add_argument("--demo-problem", action="store_true", help="write a demo problem into DIR")
    ap.add_argument("--only", help="regex on 'library/slug' to run a subset")
    ap.add_argument("--n", type=int, help="use only the first N starts (development)")
    ap.add_argument("--list", action="store_true", help="list the samplers")
    ap.add_argument("--rescore", action="store_true",
                    help="run DIR/rescore.json's candidates on the fresh start sets (DIR/rescore-peers.json)")
    a = ap.parse_args(argv)
    quiet_diffusers()
    if a.self_test:
        with default_dtype(torch.float64):
            return self_test()
    if a.list:
        for s in all_specs(a.only):
            print(f"{s.library:11s} {s.slug:48s} {s.sampler} [{s.schedule}]{' stochastic' if s.stochastic else ''}")
        return 0
    if a.dir is None:
        ap.error("DIR is required")
    if a.demo_problem:
        a.dir.mkdir(parents=True, exist_ok=True)
        demo_problem(a.dir)
        return 0
    if a.rescore:
        return rescore(a.dir)
    if a.agree:
        return agree(a.dir, [int(b) for b in a.agree_nfe.split(",")], a.agree_n, a.only)
    return run_problem(a.dir, a.only, a.n)


if __name__ == "__main__":
    sys.exit(main())
