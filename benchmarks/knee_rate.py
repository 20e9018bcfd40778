"""Which rate lets a pruned head recover? The knee's recovery rate, chosen by measurement.

From one trained start (the notebooks' trained_head_seed<seed>.pt, trained here if missing), prune all three
hidden layers in one step to a share of their widths (l2), and let the head recover at a tenth of the schedule's
learning rate, at the rate itself, and at twice it: early stopping on validation (patience 3, at most 12
epochs), as labkit.knee's probes do. Beside each, the start trained as many epochs at the same rate, nothing
removed (the equal-budget control). Prints one line per (share, rate): validation accuracy kept, epochs kept of
run, the control's, and the gap in points; then the machine's float32 matmul rate.

    .venv/bin/python benchmarks/knee_rate.py [--profile quick] [--shares 0.25 0.125] [--factors 0.1 1 2]

Quick profile on a 2-core CPU: about 3 minutes.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from labkit import config as cfg, knee, notebook, study  # noqa: E402


def matmul_rate(n: int = 4096, repeats: int = 5) -> float:
    """float32 n x n matmul GFLOP/s on this machine, now."""
    a = torch.randn(n, n)
    a @ a
    began = time.perf_counter()
    for _ in range(repeats):
        a @ a
    return 2 * n ** 3 * repeats / (time.perf_counter() - began) / 1e9


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick", choices=tuple(cfg.PROFILES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.25, 0.125])
    parser.add_argument("--factors", type=float, nargs="+", default=[0.1, 1.0, 2.0])
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args(argv)
    session = notebook.open_session(args.profile)
    study.train_start(dataclasses.replace(session.config, seed=args.seed), session.start_path(args.seed),
                      progress=False)
    rate_before = matmul_rate()
    with tempfile.TemporaryDirectory() as tmp:
        base = dataclasses.replace(session.config, start=str(session.start_path(args.seed)), seed=args.seed,
                                   layer="all", method="l2", results_dir=tmp, checkpoints="off")
        print(f"{'widths':>16} {'rate':>8} {'val kept':>9} {'epochs':>9} {'control':>8} {'gap':>7}")
        for factor in args.factors:
            rate = base.lr * factor
            control = dataclasses.replace(cfg.control_of(base), epochs=1, cycles=args.epochs + 1, cycle_lr=rate)
            ctl_rows = None
            for share in args.shares:
                target = knee.probe_widths(base.hidden, "all", share)
                probe = dataclasses.replace(base, schedule="oneshot", target=target, cycles=2, epochs=args.epochs,
                                            recover_patience=args.patience, cycle_lr=rate)
                row = study.run_study(probe, progress=False, log=None)[1]
                if ctl_rows is None or len(ctl_rows) <= row["cycle_epochs"]:
                    ctl_rows = study.run_study(dataclasses.replace(control, cycles=args.epochs + 1),
                                               progress=False, log=None)
                ctl = ctl_rows[row["cycle_epochs"]]
                print(f"{cfg.hidden_text(row['widths']):>16} {rate:>8.2g} {row['val_accuracy']:>9.2%} "
                      f"{row['cycle_epochs']:>4} of {row['epochs_run']:<2} {ctl['val_accuracy']:>8.2%} "
                      f"{100 * (row['val_accuracy'] - ctl['val_accuracy']):>+7.2f}", flush=True)
    print(f"float32 4096^2 matmul: {rate_before:.0f} GFLOP/s before, {matmul_rate():.0f} after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
