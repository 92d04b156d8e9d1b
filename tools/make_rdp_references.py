#!/usr/bin/env python3
"""Reference epsilons for the coordinator's Renyi-DP accountant (coordinator/src/privacy/rdp.rs).

Writes coordinator/tests/fixtures/privacy/rdp_references.json.

What computes the numbers
-------------------------
* Primary: Opacus' own `opacus/accountants/analysis/rdp.py` (`compute_rdp`, `get_privacy_spent`),
  loaded directly from the installed Opacus package *by file path*, so that `import opacus` (which
  imports torch) never runs. That file needs only math, numpy and scipy. Install it without torch:

      pip install numpy scipy mpmath dp-accounting
      pip install --no-deps opacus==1.6.0

  The order grid is Opacus' `RDPAccountant.DEFAULT_ALPHAS`
  (`[1 + x / 10 for x in 1..99] + list(range(12, 64))`), read from the same package.
* Cross-check 1: Google's `dp_accounting` (`RdpAccountant` with a Poisson-sampled Gaussian event,
  same orders). Where its series for a fractional order converges, the two libraries agree to
  about 1e-7 relative on epsilon. But dp-accounting 0.6.0 stops that series after 1000 terms and
  then *drops the order* ("failed to converge ... Excluding this order"); for small noise and
  q = 0.1 the dropped low orders are the optimal ones, so its epsilon is larger there (up to 6%).
  The JSON records both epsilons per case; the Rust accountant follows Opacus.
* Cross-check 2: the per-step RDP at a few (q, sigma, order) points, integrated numerically with
  mpmath at 40 digits straight from the definition
  A = E_{z ~ N(0, sigma^2)}[((1 - q) + q exp((2z - 1) / (2 sigma^2)))^order],
  RDP = log(A) / (order - 1). Opacus matches it to about 1e-10 relative (recorded in the JSON).

Both convert RDP to (epsilon, delta) with the same improved bound (Balle et al. 2020, Theorem 21;
Asoodeh et al. 2020): eps = rdp - (log(delta) + log(order)) / (order - 1) + log((order - 1) / order),
minimised over the orders.

Run from the repository root: python tools/make_rdp_references.py
"""

import importlib.util
import json
import math
import os
import sys

import numpy as np
import scipy


def load_opacus_rdp():
    spec = importlib.util.find_spec("opacus")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("opacus is not installed: pip install --no-deps opacus==1.6.0")
    root = list(spec.submodule_search_locations)[0]
    # Read the version from the package metadata, not by importing opacus (which needs torch).
    from importlib.metadata import version

    opacus_version = version("opacus")

    def load(relative, name):
        path = os.path.join(root, *relative)
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return module

    analysis = load(["accountants", "analysis", "rdp.py"], "opacus_rdp_analysis")
    # DEFAULT_ALPHAS lives on the RDPAccountant class, whose module imports torch-free parts of
    # opacus only through relative imports; read the literal from its source instead.
    source = open(os.path.join(root, "accountants", "rdp.py")).read()
    line = next(l for l in source.splitlines() if "DEFAULT_ALPHAS =" in l)
    alphas = eval(line.split("=", 1)[1].strip())  # the literal list comprehension
    return analysis, alphas, opacus_version


def dp_accounting_epsilon(noise_multiplier, q, steps, delta, orders):
    import dp_accounting
    from dp_accounting import rdp as rdp_lib

    accountant = rdp_lib.RdpAccountant(orders=orders)
    event = dp_accounting.PoissonSampledDpEvent(
        q, dp_accounting.GaussianDpEvent(noise_multiplier)
    )
    accountant.compose(event, steps)
    return accountant.get_epsilon_and_optimal_order(delta)


def rdp_by_integration(q, sigma, order):
    import mpmath as mp

    mp.mp.dps = 40
    q, s, a = mp.mpf(q), mp.mpf(sigma), mp.mpf(order)
    f = lambda z: mp.npdf(z, 0, s) * ((1 - q) + q * mp.exp((2 * z - 1) / (2 * s * s))) ** a
    total = mp.quad(f, [-mp.inf, -20, 0, 1, 5, 20, 60, mp.inf])
    return float(mp.log(total) / (a - 1))


def main():
    import logging

    logging.getLogger("absl").setLevel(logging.ERROR)
    analysis, orders, opacus_version = load_opacus_rdp()
    from importlib.metadata import version

    dp_version = version("dp-accounting")

    sigmas = [0.8, 1.1, 2.0]
    rates = [0.01, 0.1, 1.0]
    steps_list = [1, 10, 100, 1000]
    deltas = [1e-5]

    per_step = []
    for sigma in sigmas:
        for q in rates:
            rdp = analysis.compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=orders)
            per_step.append(
                {"noise_multiplier": sigma, "sampling_rate": q, "rdp": [float(r) for r in rdp]}
            )

    cases = []
    max_rel_diff = 0.0
    for sigma in sigmas:
        for q in rates:
            for steps in steps_list:
                for delta in deltas:
                    rdp = analysis.compute_rdp(
                        q=q, noise_multiplier=sigma, steps=steps, orders=orders
                    )
                    eps, order = analysis.get_privacy_spent(orders=orders, rdp=rdp, delta=delta)
                    eps_dp, order_dp = dp_accounting_epsilon(sigma, q, steps, delta, orders)
                    rel = abs(eps - eps_dp) / eps
                    max_rel_diff = max(max_rel_diff, rel)
                    cases.append(
                        {
                            "noise_multiplier": sigma,
                            "sampling_rate": q,
                            "steps": steps,
                            "delta": delta,
                            "epsilon": float(eps),
                            "optimal_order": float(order),
                            "epsilon_dp_accounting": float(eps_dp),
                            "optimal_order_dp_accounting": float(order_dp),
                        }
                    )

    integration = []
    max_rel_integration = 0.0
    for q, sigma, order in [
        (0.1, 0.8, 1.1),
        (0.1, 0.8, 1.7),
        (0.1, 0.8, 2.4),
        (0.1, 1.1, 2.1),
        (0.01, 0.8, 4.8),
        (0.1, 2.0, 3.5),
        (0.1, 0.8, 6.0),
        (0.01, 1.1, 12.0),
    ]:
        exact = rdp_by_integration(q, sigma, order)
        opacus = float(analysis._compute_rdp(q, sigma, order))
        rel = abs(exact - opacus) / exact
        max_rel_integration = max(max_rel_integration, rel)
        integration.append(
            {"sampling_rate": q, "noise_multiplier": sigma, "order": order,
             "rdp_integrated": exact, "rdp_opacus": opacus}
        )

    out = {
        "generator": "tools/make_rdp_references.py",
        "tool": f"opacus {opacus_version} accountants/analysis/rdp.py (compute_rdp, get_privacy_spent), "
        f"loaded by file path without torch; cross-checked with dp-accounting {dp_version} "
        "RdpAccountant (PoissonSampledDpEvent of GaussianDpEvent)",
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "conversion": "eps = rdp - (log(delta) + log(order)) / (order - 1) + log((order - 1) / order), "
        "minimised over orders (Balle et al. 2020, Theorem 21)",
        "orders": [float(o) for o in orders],
        "max_relative_difference_opacus_vs_dp_accounting": max_rel_diff,
        "max_relative_difference_opacus_vs_integration": max_rel_integration,
        "integration_checks": integration,
        "per_step_rdp": per_step,
        "cases": cases,
    }
    path = os.path.join("coordinator", "tests", "fixtures", "privacy", "rdp_references.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    agree = sum(
        1 for c in cases if abs(c["epsilon"] - c["epsilon_dp_accounting"]) <= 1e-6 * c["epsilon"]
    )
    print(
        f"wrote {path}: {len(cases)} cases; dp-accounting agrees to 1e-6 on {agree} "
        f"(max relative diff {max_rel_diff:.3e}, from orders it drops); "
        f"opacus vs mpmath integration max relative diff {max_rel_integration:.3e}"
    )


if __name__ == "__main__":
    main()
