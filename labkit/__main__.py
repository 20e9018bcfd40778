"""Command line: `python -m labkit study --profile quick --method l2` (see --help)."""
from __future__ import annotations

import argparse
import sys


def _study_args(p: argparse.ArgumentParser) -> None:
    from . import prune, study

    p.add_argument("--profile", default="quick", choices=tuple(study.PROFILES), help="size of the run (default quick)")
    p.add_argument("--method", default=None, choices=prune.METHODS, help="pruning criterion (default l2)")
    p.add_argument("--layer", type=_layer, help="hidden layer to prune, 0..2, or 'all' in proportion (default 0)")
    p.add_argument("--schedule", choices=study.SCHEDULES,
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


def _layer(text: str):
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"layer {text!r} must be 0, 1, 2 or 'all'") from None


def _config(parser, args, **defaults):
    from . import study

    overrides = {k: v for k, v in vars(args).items()
                 if k not in ("command", "profile", "no_progress", "bits") and v is not None}
    if "head" in overrides:
        overrides["head"] = tuple(overrides["head"])
    try:
        return study.make_config(args.profile, **{**defaults, **overrides})
    except ValueError as err:
        parser.error(str(err))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labkit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _study_args(sub.add_parser("study", help="train, test, measure and prune, cycle after cycle"))
    comp = sub.add_parser("compress", help="prune geometrically until accuracy drops, then quantize the smallest "
                                           "head within tolerance (default: all hidden layers, 8 and 4 bits)")
    _study_args(comp)
    comp.add_argument("--bits", type=int, nargs="+", default=[8, 4],
                      help="storage widths to try: 8 (int8, scale per channel), 1-7 (k-means codebook)")
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

    if args.command == "compress":
        return _compress(parser, args)
    config = _config(parser, args)
    if _distributed(config):
        try:
            return _study(config, args)
        finally:
            import torch.distributed as dist

            dist.destroy_process_group()
    return _study(config, args)


def _distributed(config) -> bool:
    """Under torchrun (WORLD_SIZE > 1): join the process group, NCCL on GPUs, gloo on CPUs."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    import torch
    import torch.distributed as dist

    from .train import pick_device

    if pick_device(config.device).type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return True


def _study(config, args) -> int:
    from . import study
    from .train import is_lead, world

    if not is_lead():  # rank 0 speaks for every rank
        import io

        sys.stdout = io.StringIO()
    _, size = world()
    if size > 1:
        print(f"labkit study: {size} processes (torchrun), DistributedDataParallel; rank 0 writes the results")
    print(f"labkit study: run {config.run_name} -> {config.run_dir}", flush=True)
    rows = _guarded(config, study.run_study, config, progress=not args.no_progress,
                    log=lambda s: print(s, flush=True))
    if isinstance(rows, int):
        return rows
    print(f"\n{len(rows)} cycles in {config.run_dir / 'history.csv'}")
    print(study.format_table(rows, study.COLUMNS_SHOWN))
    if config.schedule == "geometric":
        best = study.smallest_within(rows, config.tolerance)
        print(f"\nsmallest head within {config.tolerance:g} point(s) of the unpruned one: cycle {best['cycle']}, "
              f"widths {best['widths']}, MEC {best['mec_bits']:,} bits, accuracy {best['test_accuracy']:.2%}, "
              f"rho {best['rho']:.3g}, {best['parameters']:,} parameters, {best['model_bytes']:,} bytes "
              f"-> {config.run_dir / study.SMALLEST}")
    _peak_memory()
    return 0


def _guarded(config, call, *a, **kw):
    """call(*a, **kw), or the exit code after saying what an interruption or a bad setting left behind."""
    try:
        return call(*a, **kw)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished cycles are saved in {config.run_dir}; "
              "run the same command again to resume", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _peak_memory() -> None:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kilobytes on Linux
    print(f"peak memory of this process: {peak:.2f} GiB")


def _compress(parser, args) -> int:
    import os

    from . import study

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        parser.error("compress runs in one process; start it with python -m labkit, not torchrun")
    # cycles is only an upper bound here: the run stops at the knee
    config = _config(parser, args, schedule="geometric", layer="all", cycles=study.GEOMETRIC_CYCLES)
    print(f"labkit compress: run {config.run_name} -> {config.run_dir}", flush=True)
    result = _guarded(config, study.compress_smallest, config, args.bits, progress=not args.no_progress,
                      log=lambda s: print(s, flush=True))
    if isinstance(result, int):
        return result
    rows, best, table = result
    print(f"\nunpruned head: widths {rows[0]['widths']}, accuracy {rows[0]['test_accuracy']:.2%}, "
          f"float32 file {rows[0]['model_bytes']:,} bytes")
    print(f"smallest within {config.tolerance:g} point(s): cycle {best['cycle']}, widths {best['widths']}, "
          f"MEC {best['mec_bits']:,} bits, rho {best['rho']:.3g}")
    print("each file below was written, loaded back from disk and evaluated on the test set:")
    print(study.format_table(table, ("storage", "bytes", "ratio", "test_correct", "test_accuracy", "drop_points")))
    _peak_memory()
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
