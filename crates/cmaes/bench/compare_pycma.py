#!/usr/bin/env python3
"""Side-by-side efficiency of evomerge-cmaes and pycma on the same problems.

Reproduce (from the repository root):

    /root/pyref/models/bin/python crates/cmaes/bench/compare_pycma.py [--seeds 5] [--json out.json]

Needs: Python 3.11 with cma 4.5 and numpy (any virtualenv: `pip install cma==4.5 numpy`),
and cargo. The Rust side runs through `cargo bench -p evomerge-cmaes --bench functions`
(optimised build), reading the same problem list (x0, sigma0, restarts, budget) that pycma
gets here. Reports median evaluations until a candidate with f < 1e-8 is evaluated (counted
per whole generation on both sides; medians over successful runs) and, for Rastrigin with
IPOP, the success rate; also the median wall time of one run (objective included; pycma pays
Python's per-candidate overhead, so the times compare implementations, not algorithms).

Problems: sphere and ellipsoid (condition 1e6), n = 10, x0 = 3, sigma0 = 2; Rosenbrock n = 10
and n = 40, x0 = 0, sigma0 = 0.5; Rastrigin n = 10, x0 uniform in [-4, 4]^n (seeded, same
for both), sigma0 = 2, IPOP with up to 9 restarts (population doubled), budget 1e6
evaluations. pycma runs with default options (active CMA, CSA) and manual IPOP that mirrors
`cma.fmin(restarts=9, incpopsize=2)`: restart from the same x0 with twice the population.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import cma

TARGET = 1e-8


def sphere(x):
    return float(np.sum(np.square(x)))


def ellipsoid(x):
    n = len(x)
    return float(sum(1e6 ** (i / (n - 1)) * x[i] ** 2 for i in range(n)))


def rosenbrock(x):
    x = np.asarray(x)
    return float(np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2))


def rastrigin(x):
    x = np.asarray(x)
    return float(10.0 * len(x) + np.sum(x * x - 10.0 * np.cos(2.0 * np.pi * x)))


FUNCTIONS = dict(sphere=sphere, ellipsoid=ellipsoid, rosenbrock=rosenbrock, rastrigin=rastrigin)


def problems(seeds):
    out = []
    for seed in range(1, seeds + 1):
        out.append(dict(label="sphere-10", function="sphere", x0=[3.0] * 10, sigma0=2.0, restarts=0, max_evals=100_000))
        out.append(dict(label="ellipsoid-10", function="ellipsoid", x0=[3.0] * 10, sigma0=2.0, restarts=0, max_evals=100_000))
        out.append(dict(label="rosenbrock-10", function="rosenbrock", x0=[0.0] * 10, sigma0=0.5, restarts=0, max_evals=100_000))
        out.append(dict(label="rosenbrock-40", function="rosenbrock", x0=[0.0] * 40, sigma0=0.5, restarts=0, max_evals=400_000))
        x0 = np.random.default_rng(seed).uniform(-4.0, 4.0, 10).tolist()
        out.append(dict(label="rastrigin-10-ipop", function="rastrigin", x0=x0, sigma0=2.0, restarts=9, max_evals=1_000_000))
        for p in out[-5:]:
            p["seed"] = seed
            p["target"] = TARGET
    return out


def run_pycma(p):
    start = time.perf_counter()
    evals = _run_pycma(p)
    return evals, time.perf_counter() - start


def _run_pycma(p):
    f = FUNCTIONS[p["function"]]
    total = 0
    popsize = None
    for restart in range(p["restarts"] + 1):
        opts = {"seed": p["seed"] * 1000 + restart + 1, "verbose": -9, "maxfevals": p["max_evals"] - total}
        if popsize:
            opts["popsize"] = popsize
        es = cma.CMAEvolutionStrategy(p["x0"], p["sigma0"], opts)
        while not es.stop():
            xs = es.ask()
            fs = [f(x) for x in xs]
            es.tell(xs, fs)
            total += len(xs)
            if min(fs) < TARGET:
                return total
            if total >= p["max_evals"]:
                return None
        popsize = 2 * es.popsize
    return None


def run_rust(ps):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(ps, fh)
        spec = fh.name
    try:
        out = subprocess.run(
            ["cargo", "bench", "-q", "-p", "evomerge-cmaes", "--bench", "functions", "--", spec],
            cwd=root, check=True, capture_output=True, text=True,
        ).stdout
    finally:
        os.unlink(spec)
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def summary(evals):
    ok = [e for e in evals if e is not None]
    med = statistics.median(ok) if ok else float("nan")
    return med, len(ok), len(evals)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--json", help="also write raw results here")
    args = ap.parse_args()
    ps = problems(args.seeds)
    rust = run_rust(ps)
    assert len(rust) == len(ps), (len(rust), len(ps))
    py = [run_pycma(p) for p in ps]
    labels = list(dict.fromkeys(p["label"] for p in ps))
    print(f"cma {cma.__version__}, numpy {np.__version__}, {args.seeds} seeds, target f < {TARGET:g}")
    print()
    print("| problem | evomerge-cmaes median evals (successes) | pycma median evals (successes) | ratio | evomerge-cmaes s/run | pycma s/run |")
    print("|---|---|---|---|---|---|")
    raw = {}
    for label in labels:
        idx = [i for i, p in enumerate(ps) if p["label"] == label]
        r_med, r_ok, n = summary([rust[i]["evals"] for i in idx])
        p_med, p_ok, _ = summary([py[i][0] for i in idx])
        ratio = r_med / p_med if p_ok and r_ok else float("nan")
        r_sec = statistics.median(rust[i]["seconds"] for i in idx)
        p_sec = statistics.median(py[i][1] for i in idx)
        print(f"| {label} | {r_med:.0f} ({r_ok}/{n}) | {p_med:.0f} ({p_ok}/{n}) | {ratio:.2f} | {r_sec:.3f} | {p_sec:.3f} |")
        raw[label] = dict(rust=[rust[i]["evals"] for i in idx], pycma=[py[i][0] for i in idx])
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(raw, fh, indent=1)


if __name__ == "__main__":
    sys.exit(main())
