"""Tables of `train_quality.py --nfe-sweep` results: the learning-curve rows and, per
configuration, the evaluations the probability-flow ODE needs to come within `--within` nats
of the same model's converged ODE (adaptive Tsit5 at 1e-5, the `ode` entry).

    python benchmarks/nfe_at_accuracy.py results/train_quality_fm_ot_*.json [--within 0.1]

For each sampler family of the sweep (adaptive tolerances, Euler steps equal in log sigma,
Euler steps equal in t) it gives the NFE of the first setting whose gap is within `within` of
the reference gap, and that NFE interpolated: linear in log NFE between the last setting
outside and the first inside, on the distance `|gap - reference|`. Prints markdown.
"""

import argparse
import json
import math

FAMILIES = {"adaptive": "ode_tol_", "euler": "euler_", "euler_t": "euler_t_"}
NAMES = {"eight_2d": "8 Gaussians, 2-D", "mix_16d": "4 Gaussians, 16-D"}


def family(point: dict, prefix: str) -> list[tuple[float, float]]:
    """`(nfe, gap)` of the sweep entries of one family, by increasing NFE."""
    rows = [
        (v["nfe"], v["gap"])
        for k, v in point.items()
        if k.startswith(prefix) and not (prefix == "euler_" and k.startswith("euler_t_"))
    ]
    return sorted(rows)


def nfe_within(rows: list[tuple[float, float]], ref: float, within: float):
    """The first NFE within `within` of `ref`, and the NFE interpolated (log-linear) to it;
    `None` for both when no setting gets there."""
    prev = None
    for nfe, gap in rows:
        err = abs(gap - ref)
        if err <= within:
            if prev is None:
                return nfe, nfe
            (n0, e0), (n1, e1) = prev, (nfe, err)
            w = (e0 - within) / (e0 - e1)
            return nfe, math.exp(math.log(n0) + w * (math.log(n1) - math.log(n0)))
        prev = (nfe, err)
    return None, None


def fmt(x, spec):
    return "—" if x is None else format(x, spec)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("files", nargs="+")
    p.add_argument("--within", type=float, default=0.1)
    args = p.parse_args()
    curves, sweeps, needs = [], [], {}
    for f in args.files:
        for target, configs in json.load(open(f))["targets"].items():
            for name, res in configs.items():
                if "em1000" not in res["points"][0]:
                    continue  # an image target: bits/dim, no sweep
                for pt in res["points"]:
                    em, ode = pt["em1000"], pt["ode"]
                    curves.append(
                        f"| {NAMES.get(target, target)} | {name} | {pt['step']:,} | "
                        f"{pt['train_seconds']:.0f} | {pt['step'] / pt['train_seconds']:.1f} | "
                        f"{pt['loss']:.3f} | {em['gap']:+.2f} ± {em['gap_stderr']:.2f} | "
                        f"{em['off_mode']:.1%} | {em['far_outliers']} | "
                        f"{ode['gap']:+.2f} ± {ode['gap_stderr']:.2f} | {ode['off_mode']:.1%} | "
                        f"{ode['far_outliers']} | {ode['nfe']:.0f} |"
                    )
                final = res["points"][-1]
                if "euler_2" not in final:
                    continue
                ref = final["ode"]["gap"]
                cells = []
                for fam, prefix in FAMILIES.items():
                    rows = family(final, prefix)
                    cells.append(" ".join(f"{n:.0f}:{g:+.2f}" for n, g in rows))
                    needs[(target, name, fam)] = nfe_within(rows, ref, args.within)
                ref_nfe = final["ode"]["nfe"]
                head = f"| {NAMES.get(target, target)} | {name} | {ref:+.2f} ({ref_nfe:.0f})"
                sweeps.append(head + " | " + " | ".join(cells) + " |")
    print(
        "| target | trainer | steps | s | steps/s | train loss | EM-1000 gap | off | far | "
        "ODE gap | off | far | ODE NFE |"
    )
    print("| --- " * 13 + "|")
    print("\n".join(curves))
    print()
    print(
        "| target | trainer | reference gap (NFE) | adaptive NFE:gap | Euler in log sigma | "
        "Euler in t |"
    )
    print("| --- " * 6 + "|")
    print("\n".join(sweeps))
    print()
    print(f"NFE to come within {args.within} nats of the reference (first setting / interpolated):")
    print()
    print("| target | trainer | adaptive | Euler in log sigma | Euler in t |")
    print("| --- " * 5 + "|")
    for target in dict.fromkeys(t for t, _, _ in needs):
        for name in dict.fromkeys(n for t, n, _ in needs if t == target):
            cells = []
            for fam in FAMILIES:
                first, interp = needs[(target, name, fam)]
                cells.append(f"{fmt(first, '.0f')} / {fmt(interp, '.1f')}")
            print(f"| {NAMES.get(target, target)} | {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
