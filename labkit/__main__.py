"""Command line: `python -m labkit study --profile quick --method l2` (see --help)."""
from __future__ import annotations

import argparse
import sys


def _study_args(p: argparse.ArgumentParser) -> None:
    from . import prune, study

    p.add_argument("--profile", default="quick", choices=tuple(study.PROFILES), help="size of the run (default quick)")
    p.add_argument("--method", default=None, choices=prune.METHODS, help="pruning criterion (default l2)")
    p.add_argument("--layer", type=int, help="hidden layer to prune, 0..2 (default 0)")
    p.add_argument("--k", type=int, help="neurons removed per cycle (default 100)")
    p.add_argument("--cycles", type=int, help="number of cycles (profile's default)")
    p.add_argument("--epochs", type=int, help="training epochs per cycle (profile's default)")
    p.add_argument("--batch-size", type=int, dest="batch_size", help="training batch size")
    p.add_argument("--lr", type=float, help="Adam learning rate")
    p.add_argument("--train-limit", type=int, dest="train_limit", help="training images (class-balanced subset)")
    p.add_argument("--test-limit", type=int, dest="test_limit", help="test images (class-balanced subset)")
    p.add_argument("--image-size", type=int, dest="image_size", help="input side in pixels (32 or more)")
    p.add_argument("--weights", choices=("auto", "imagenet", "none"), help="backbone weights (default auto)")
    p.add_argument("--seed", type=int, help="seed of initialization, shuffling, dropout and reservoir sampling")
    p.add_argument("--device", help="auto, cpu or cuda")
    p.add_argument("--results", dest="results_dir", help="parent folder of the run's folder (default results)")
    p.add_argument("--name", help="run name (default derived from the settings)")
    p.add_argument("--start", help="a trained head checkpoint to start from (cycle 0 is measured, not trained)")
    p.add_argument("--checkpoints", choices=("all", "last", "none"), help="which cycle checkpoints to keep")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labkit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _study_args(sub.add_parser("study", help="train, test, measure and prune, cycle after cycle"))
    lab = sub.add_parser("lab", help="run the five notebooks with papermill into results/<profile>/")
    lab.add_argument("--profile", default="quick", help="ci, quick or paper (default quick)")
    lab.add_argument("-f", "--parameters-file", dest="parameters_file",
                     help="YAML file of notebook parameters (as papermill -f)")
    lab.add_argument("--only", nargs="+", help="run only these notebooks (names without .ipynb)")
    hand = sub.add_parser("handouts", help="student copies (solutions stubbed) and HTML renders to handouts/")
    hand.add_argument("--profile", default="quick", help="whose executed notebooks to render (default quick)")
    hand.add_argument("--out", default="handouts", help="output folder (default handouts)")
    args = parser.parse_args(argv)
    if args.command == "lab":
        return _lab(args)
    if args.command == "handouts":
        from .lab import make_handouts

        make_handouts(args.profile, args.out)
        return 0

    from . import study

    overrides = {k: v for k, v in vars(args).items()
                 if k not in ("command", "profile", "no_progress") and v is not None}
    try:
        config = study.make_config(args.profile, **overrides)
    except ValueError as err:
        parser.error(str(err))
    print(f"labkit study: run {config.run_name} -> {config.run_dir}", flush=True)
    try:
        rows = study.run_study(config, progress=not args.no_progress,
                               log=lambda s: print(s, flush=True))
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished cycles are saved in {config.run_dir}; "
              "run the same command again to resume", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"\n{len(rows)} cycles in {config.run_dir / 'history.csv'}")
    print(study.format_table(rows, study.COLUMNS_SHOWN))
    return 0


def _lab(args) -> int:
    from . import lab

    parameters = {}
    if args.parameters_file:
        import yaml  # comes with papermill

        parameters = yaml.safe_load(open(args.parameters_file)) or {}
    try:
        paths = lab.run_notebooks(args.profile, args.only or lab.NOTEBOOKS, parameters)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"\n{len(paths)} executed notebooks in {paths[0].parent}; figures in {paths[0].parent / 'figures'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
