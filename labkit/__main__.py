"""Command line: `python -m labkit study --profile quick --method l2` (see --help)."""
from __future__ import annotations

import argparse
import contextlib
import sys

try:
    from . import config as cfg
    from .device import pick_device
    from .prune import METHODS
except KeyboardInterrupt:  # Ctrl-C while torch is still being imported: nothing has started
    sys.exit(130)


def _study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="quick", choices=tuple(cfg.PROFILES), help="size of the run (default quick)")
    p.add_argument("--method", default=None, choices=(*METHODS, *cfg.CONTROLS),
                   help="pruning criterion (default l2), or a control: none (nothing removed), scratch (a fresh head)")
    p.add_argument("--layer", type=_layer, help="hidden layer to prune (0 is the first), or 'all' in proportion "
                                                "(default 0)")
    p.add_argument("--schedule", choices=cfg.SCHEDULES,
                   help="fixed: k neurons a cycle (default); geometric: a fraction of those left a cycle; oneshot: "
                        "cycle 1 prunes to --target in one step (a knee probe)")
    p.add_argument("--k", type=int, help="fixed schedule: neurons removed per cycle (default 100)")
    p.add_argument("--fraction", type=float, help="geometric schedule: share removed per cycle; compress: share of "
                                                  "the widths removed per step of the knee search (default 0.5)")
    p.add_argument("--target", type=int, nargs="+", help="oneshot schedule: the hidden widths to prune to")
    p.add_argument("--recover-patience", type=int, dest="recover_patience",
                   help="every cycle after cycle 0 trains until validation accuracy has not risen for this many "
                        "epochs (at most --epochs) and keeps its best epoch (default: exactly --epochs)")
    p.add_argument("--cycle-lr", type=float, dest="cycle_lr",
                   help="learning rate of the cycles after cycle 0 (default: lr x lr_drop, fine-tuning)")
    p.add_argument("--tolerance", type=float,
                   help="accuracy loss in percentage points still counted as none (default 1.0)")
    p.add_argument("--hidden", dest="hidden", type=int, nargs="+",
                   help="hidden widths of the head (default 4096 4096 256)")
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
    p.add_argument("--weights", choices=cfg.WEIGHT_CHOICES,
                   help="backbone weights: auto (ImageNet where available), imagenet, random; default auto")
    p.add_argument("--seed", type=int, help="seed of initialization, shuffling, dropout and reservoir sampling")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--results", dest="results_dir",
                   help="parent folder of the run's folder (default $LABKIT_RESULTS/<profile>/runs, where the "
                        "notebooks' runs go; LABKIT_RESULTS defaults to ./results)")
    p.add_argument("--name", help="run name: one folder name inside the results folder (default derived from "
                                  "the settings)")
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


# options that are not study settings (StudyConfig fields)
NOT_SETTINGS = ("command", "profile", "no_progress")


def _config(parser: argparse.ArgumentParser, args, **defaults) -> cfg.StudyConfig:
    overrides = {k: v for k, v in vars(args).items() if k not in NOT_SETTINGS and v is not None}
    for name in ("hidden", "target"):
        if name in overrides:
            overrides[name] = tuple(overrides[name])
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
        "compress", help="notebook 03's knee search and Deep Compression, run as notebooks 02 and 03 (papermill) "
                         "into results/<profile>/, with these parameters")
    comp.add_argument("--profile", default="quick", choices=tuple(cfg.PROFILES), help="size of the run (default quick)")
    comp.add_argument("--layer", type=_layer, default="all",
                      help="hidden layer(s) the knee prunes: 0, 1, 2, or 'all' in proportion (default all)")
    comp.add_argument("--fraction", type=float, help="share of the widths removed per halving step (default 0.5)")
    comp.add_argument("--tolerance", type=float,
                      help="validation accuracy loss in points, against the control, still counted as none (default 1)")
    comp.add_argument("--seeds", type=int, help="trained heads searched together (default: the profile's)")
    comp.add_argument("--bits", type=int, choices=range(1, 8), metavar="BITS",
                      help="k-means bits of the knee head's shared weights, beside 8-bit (default 4)")
    comp.add_argument("--dc-sparsity", dest="dc_sparsity", choices=("han", "scan"),
                      help="Deep Compression: han (fc1 and fc2 keep 4%%, the rest 23%%; default) or scan")
    comp.add_argument("--dc-bits", dest="dc_bits", type=int, choices=range(1, 9), metavar="BITS",
                      help="Deep Compression: bits per shared weight (default 5, Han et al.'s)")
    subs["lab"] = lab = sub.add_parser("lab", help="run the five notebooks with papermill into results/<profile>/")
    lab.add_argument("--profile", choices=tuple(cfg.PROFILES),
                     help="size of the run (default: the parameters file's profile, else quick)")
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
    try:
        parser, subs = _parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        return 130
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
        if args.command in ("lab", "compress"):
            where = getattr(args, "results", None) or "the results folder"
            said = (f"notebooks finished so far are in {where}; run the same command again to run them all "
                    "(their study runs resume after their last finished cycle)")
        elif args.command == "handouts":
            said = f"the handouts written so far are in {args.out}; run the same command again to make them all"
        else:
            where = getattr(args, "run_dir", None) or "the run folder"
            said = f"finished cycles are saved in {where}; run the same command again to resume"
        _quietly(f"\ninterrupted: {said}")
        return 130
    except (ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _policy(args):
    """--checkpoints given: the run keeps what it says, even fewer checkpoints than its folder kept so far."""
    from . import runs

    return runs.checkpoint_policy_asked() if args.checkpoints else contextlib.nullcontext()


def _quietly(line: str) -> None:
    """Print `line` to stderr; a second Ctrl-C while it prints ends the process without a traceback."""
    try:
        print(line, file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        pass


def _study(parser, args) -> int:
    from . import tables, study

    config = _config(parser, args)
    args.run_dir = config.run_dir
    with _policy(args):
        print(f"labkit study: run {config.run_name} -> {config.run_dir}", flush=True)
        rows = study.run_study(config, progress=not args.no_progress, log=lambda s: print(s, flush=True))
        print(tables.study_summary(config, rows))
        print(tables.peak_memory())
    return 0


COMPRESS_PARAMETERS = {"layer": "knee_layer", "fraction": "fraction", "tolerance": "tolerance", "seeds": "seeds",
                       "bits": "share_bits", "dc_sparsity": "dc_sparsity", "dc_bits": "dc_bits"}


def compress_parameters(args) -> dict:
    """Notebook 03's parameters from `compress`'s options (those given)."""
    given = {COMPRESS_PARAMETERS[k]: v for k, v in vars(args).items() if k in COMPRESS_PARAMETERS and v is not None}
    if "knee_layer" in given:
        given["knee_layer"] = str(given["knee_layer"])
    return given


def _compress(parser, args) -> int:
    """The knee and Deep Compression are notebook 03's cells: one implementation, run here with papermill."""
    from . import checks, runner

    parameters = compress_parameters(args)
    try:  # checked here as notebook 03 checks them, before notebook 02 runs
        for name, value in parameters.items():
            if name in ("fraction", "tolerance"):
                checks.number(name, value, minimum=0, **({"above": 0, "below": 1} if name == "fraction" else {}))
            elif name == "seeds":
                checks.integer(name, value, minimum=0)
            elif name == "knee_layer":
                checks.choice(name, value, ("all", "0", "1", "2"))
    except ValueError as err:
        parser.error(str(err))
    args.results = cfg.results_root() / args.profile
    try:  # 02 trains the start with its own defaults; the options are 03's parameters
        paths = runner.run_notebooks(args.profile, ("02_train_vgg16",))
        paths += runner.run_notebooks(args.profile, ("03_prune_compare",), parameters)
    except ValueError as err:
        parser.error(str(err))
    folder = paths[0].parent
    print(f"the knee: {folder / 'knee.csv'}, its stored files: {folder / 'compression.csv'}, Deep Compression: "
          f"{folder / 'deep_compression.csv'}; read them in the executed {paths[-1]}")
    return 0


def _parameters(parser, path: str) -> dict:
    """The notebook parameters a YAML file holds (name: value); a usage error naming the file and what is wrong."""
    from pathlib import Path

    import yaml  # comes with papermill

    file = Path(path)
    example = "a YAML mapping of notebook parameters, one 'name: value' a line (e.g. 'k: 50')"
    if not file.is_file():
        parser.error(f"-f {path}: the parameters file {file} " + ("is a folder" if file.is_dir() else
                                                                  "does not exist") + f"; give {example}")
    try:
        value = yaml.safe_load(file.read_text())
    except UnicodeDecodeError:
        parser.error(f"-f {path}: the parameters file {file} is not text; give {example}")
    except OSError as err:
        parser.error(f"-f {path}: the parameters file {file} cannot be read ({err.strerror or err})")
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        parser.error(f"-f {path}: the parameters file {file} is not valid YAML ({where}{problem}); give {example}")
    if value is None:
        return {}
    if not isinstance(value, dict):
        kind = {list: "list", str: "single value", int: "single number", float: "single number"}.get(
            type(value), type(value).__name__)
        parser.error(f"-f {path}: the parameters file {file} holds a YAML {kind}, not {example}")
    odd = [k for k in value if not isinstance(k, str)]
    if odd:
        parser.error(f"-f {path}: the parameters file {file} names a parameter {odd[0]!r}; parameter names are words "
                     "such as k or method")
    return value


def _lab(parser, args) -> int:
    from . import notebook, runner

    parameters = _parameters(parser, args.parameters_file) if args.parameters_file else {}
    profile = args.profile
    if "profile" in parameters:
        said = parameters["profile"]
        if said not in cfg.PROFILES:
            parser.error(f"-f {args.parameters_file} says profile: {said!r}, which is not a profile; choose one of "
                         f"{', '.join(cfg.PROFILES)}")
        if profile is not None and said != profile:
            parser.error(f"--profile {profile}, but {args.parameters_file} says profile: {said}: the notebooks would "
                         f"run {said} and write to {profile}'s folder. Give the profile once: drop --profile, or the "
                         "profile line of the file")
        if profile is None:
            print(f"profile {said!r}, as {args.parameters_file} says", flush=True)
        profile = said
    profile = profile or "quick"
    args.results = cfg.results_root() / profile
    paths = runner.run_notebooks(profile, args.only or notebook.NOTEBOOKS, parameters)
    folder = paths[0].parent
    print(f"{len(paths)} executed notebooks in {folder}\nfigures in {folder / 'figures'}, tables (*.csv) in {folder}, "
          f"study runs in {folder / 'runs'}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # a second Ctrl-C while the first is being handled
        sys.exit(130)
