"""Command line: `python -m labkit study --profile quick --method l2` (see --help)."""
from __future__ import annotations

import argparse
import sys

from . import config as cfg
from .device import pick_device
from .prune import METHODS


def _study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="quick", choices=tuple(cfg.PROFILES), help="size of the run (default quick)")
    p.add_argument("--method", default=None, choices=(*METHODS, *cfg.CONTROLS),
                   help="pruning criterion (default l2), or a control: none (nothing removed), scratch (a fresh head)")
    p.add_argument("--layer", type=_layer, help="hidden layer to prune (0 is the first), or 'all' in proportion "
                                                "(default 0)")
    p.add_argument("--schedule", choices=cfg.SCHEDULES,
                   help="fixed: k neurons a cycle (default); geometric: a fraction of those left, until accuracy drops")
    p.add_argument("--k", type=int, help="fixed schedule: neurons removed per cycle (default 100)")
    p.add_argument("--fraction", type=float, help="geometric schedule: share removed per cycle (default 0.5)")
    p.add_argument("--tolerance", type=float,
                   help="accuracy loss in percentage points still counted as none (default 1.0)")
    p.add_argument("--head", type=int, nargs="+", help="hidden widths (default 4096 4096 256)")
    p.add_argument("--dropout", type=float, help="dropout between hidden layers (default 0.5)")
    p.add_argument("--cycles", type=int, help="number of cycles (profile's default)")
    p.add_argument("--epochs", type=int, help="training epochs per cycle (profile's default)")
    p.add_argument("--batch-size", type=int, dest="batch_size", help="training batch size")
    p.add_argument("--lr", type=float, help="Adam learning rate")
    p.add_argument("--train-limit", type=int, dest="train_limit", help="training images (class-balanced subset)")
    p.add_argument("--val-limit", type=int, dest="val_limit",
                   help="validation images, drawn from the training set (every decision is taken on them)")
    p.add_argument("--test-limit", type=int, dest="test_limit", help="test images (class-balanced subset)")
    p.add_argument("--image-size", type=int, dest="image_size", help="input side in pixels (32 or more)")
    p.add_argument("--weights", choices=cfg.WEIGHT_CHOICES, help="backbone weights (default auto)")
    p.add_argument("--seed", type=int, help="seed of initialization, shuffling, dropout and reservoir sampling")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--results", dest="results_dir",
                   help="parent folder of the run's folder (default $LABKIT_RESULTS/<profile>/runs, where the "
                        "notebooks' runs go; LABKIT_RESULTS defaults to ./results)")
    p.add_argument("--name", help="run name (default derived from the settings)")
    p.add_argument("--start", help="a trained head checkpoint to start from (cycle 0 is measured, not trained)")
    p.add_argument("--checkpoints", choices=cfg.CHECKPOINT_POLICIES, help="which cycle checkpoints to keep")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _layer(text: str):
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"layer {text!r} must be a hidden layer's number (0, 1, 2 for the "
                                         "default head) or 'all'") from None


def _config(parser: argparse.ArgumentParser, args, **defaults) -> cfg.StudyConfig:
    overrides = {k: v for k, v in vars(args).items()
                 if k not in ("command", "profile", "no_progress", "bits") and v is not None}
    if "head" in overrides:
        overrides["head"] = tuple(overrides["head"])
    try:
        config = cfg.make_config(args.profile, **{**defaults, **overrides})
        pick_device(config.device)  # a GPU asked for where there is none is refused now, not after loading data
    except ValueError as err:
        parser.error(str(err))
    return config


def _parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(prog="python -m labkit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    subs = {"study": sub.add_parser("study", help="train, test, measure and prune, cycle after cycle")}
    _study_args(subs["study"])
    subs["compress"] = comp = sub.add_parser(
        "compress", help="prune geometrically until accuracy drops, then quantize the smallest head within "
                         "tolerance (default: all hidden layers, 8 and 4 bits)")
    _study_args(comp)
    comp.add_argument("--bits", type=int, nargs="+", default=[8, 4], choices=range(1, 9), metavar="BITS",
                      help="storage widths to try: 8 (int8, scale per channel), 1-7 (k-means codebook)")
    subs["lab"] = lab = sub.add_parser("lab", help="run the five notebooks with papermill into results/<profile>/")
    lab.add_argument("--profile", default="quick", choices=tuple(cfg.PROFILES), help="size of the run (default quick)")
    lab.add_argument("-f", "--parameters-file", dest="parameters_file",
                     help="YAML file of notebook parameters (as papermill -f)")
    lab.add_argument("--only", nargs="+", help="run only these notebooks (names without .ipynb)")
    subs["handouts"] = hand = sub.add_parser("handouts", help="student copies (solutions stubbed) and HTML renders "
                                                              "to handouts/")
    hand.add_argument("--profile", default="quick", choices=tuple(cfg.PROFILES),
                      help="whose executed notebooks to render (default quick)")
    hand.add_argument("--out", default="handouts", help="output folder (default handouts)")
    return parser, subs


def main(argv=None) -> int:
    parser, subs = _parser()
    args = parser.parse_args(argv)
    command = subs[args.command]
    try:
        if args.command == "lab":
            return _lab(command, args)
        if args.command == "handouts":
            from .handouts import make_handouts

            make_handouts(args.profile, args.out)
            return 0
        if args.command == "compress":
            return _compress(command, args)
        return _study(command, args)
    except KeyboardInterrupt:
        where = getattr(args, "run_dir", None) or "the run folder"
        print(f"\ninterrupted: finished cycles are saved in {where}; run the same command again to resume",
              file=sys.stderr)
        return 130
    except (ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _study(parser, args) -> int:
    from . import distributed, report, study

    config = _config(parser, args)
    args.run_dir = config.run_dir
    with distributed.session(config.device):
        print(f"labkit study: run {config.run_name} -> {config.run_dir}", flush=True)
        rows = study.run_study(config, progress=not args.no_progress, log=lambda s: print(s, flush=True))
        print(report.study_summary(config, rows))
        print(report.peak_memory())
    return 0


def _compress(parser, args) -> int:
    from . import distributed, report, study

    if distributed.launched_by_torchrun():
        parser.error("compress runs in one process; start it with python -m labkit, not torchrun")
    # cycles is only an upper bound here: the run stops at the knee
    config = _config(parser, args, schedule="geometric", layer="all", cycles=cfg.GEOMETRIC_CYCLES)
    args.run_dir = config.run_dir
    print(f"labkit compress: run {config.run_name} -> {config.run_dir}", flush=True)
    result = study.compress_smallest(config, args.bits, progress=not args.no_progress,
                                     log=lambda s: print(s, flush=True))
    print(report.compress_summary(config, result))
    print(report.peak_memory())
    return 0


def _lab(parser, args) -> int:
    from . import notebook

    parameters = {}
    if args.parameters_file:
        import yaml  # comes with papermill

        parameters = yaml.safe_load(open(args.parameters_file)) or {}
    paths = notebook.run_notebooks(args.profile, args.only or notebook.NOTEBOOKS, parameters)
    folder = paths[0].parent
    print(f"{len(paths)} executed notebooks in {folder}\nfigures in {folder / 'figures'}, tables (*.csv) in {folder}, "
          f"study runs in {folder / 'runs'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
