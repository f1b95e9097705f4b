"""`fer-ray <command>`: each command is one pipeline function.

Config precedence: field defaults < `--config file.yaml` < `--set path=value` < flags.
Every config field has a flag named after its leaf (`face.detector` -> `--detector`).
Exit codes: 0 done, 2 bad configuration or input (nothing touched), 1 the run failed
(one line on stderr naming the log file, which holds the traceback), 130 interrupted.
"""
from __future__ import annotations

import argparse
import difflib
import errno
import logging
import re
import signal
import sys
import traceback

from fer_ray import config, logs, storage
from fer_ray.config import (
    ConfigError,
    LabelVideosConfig,
    PredictConfig,
    PreprocessConfig,
    SynthesizeConfig,
    TrainConfig,
    TuneConfig,
)
from fer_ray.report import print_labelling, print_predictions, print_report, print_summary, print_sweep, print_synthesis

log = logging.getLogger("fer_ray.cli")  # not __name__: under `python -m` that is __main__, outside the run log
FAILURE_MESSAGE_CHARS = 200
# the commands that start or join Ray; the others print only their own lines anyway
RAY_COMMANDS = {"preprocess", "synthesize", "train", "tune", "evaluate", "predict", "label-videos", "export", "demo"}
# the commands that run no Ray Train: a local instance started for one has no dashboard
DATA_COMMANDS = {"preprocess", "synthesize", "predict", "label-videos"}
VERBOSE_HELP = ("show Ray's own output (progress records, warnings, workers' output) here rather than only in "
                "the run's log file, and on failure the traceback (it is always in the log file)")


def flag(field: str) -> str:
    """A config field's command-line flag: `cpus_per_worker` -> `--cpus-per-worker`."""
    return "--" + field.replace("_", "-")


def flags(fields: dict) -> list[str]:
    """Config fields as this CLI takes them, `--name=value` each (`=`: a value that starts
    with `-` is still the flag's value)."""
    return [f"{flag(field)}={value}" for field, value in fields.items()]


def add_config_flags(parser: argparse.ArgumentParser, cfg_cls: type) -> None:
    parser.add_argument("--config", help="YAML file of config fields (nested as in the written config.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                        help="set any config field by dotted path, e.g. --set face.crop_width=2.2")
    defaults, helps = cfg_cls(), config.field_help(cfg_cls)
    for path, (leaf, kind) in config.leaf_fields(cfg_cls).items():
        choices = config.CHOICES.get(path)
        help_text = f"{helps[path]} [{path}; default {_get(defaults, path)!r}" + (
            f"; one of: {', '.join(choices)}]" if choices else "]")
        # a bare boolean flag means true (`--gpu`); `--gpu false` still works
        extra = {"nargs": "?", "const": "true"} if kind is bool else {}
        parser.add_argument(flag(leaf), dest=path, default=argparse.SUPPRESS,
                            metavar=kind.__name__.upper(), help=help_text, **extra)


def _get(cfg, path: str):
    for name in path.split("."):
        cfg = getattr(cfg, name)
    return cfg


def build_config(cfg_cls: type, args: argparse.Namespace):
    """The config from defaults, YAML, --set and flags, in that order."""
    settings = []
    for item in args.set:
        path, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {config.show(item)}: expected PATH=VALUE")
        settings.append((path.strip(), value))
    settings += [(path, getattr(args, path)) for path in config.leaf_fields(cfg_cls) if hasattr(args, path)]
    return config.build(cfg_cls, args.config, settings)


def cmd_preprocess(args) -> int:
    from fer_ray.pipelines import preprocess

    cfg = build_config(PreprocessConfig, args)
    summary = preprocess.run(cfg)
    print_summary(summary)
    return 0


def cmd_synthesize(args) -> int:
    from fer_ray.pipelines import synthesize

    print_synthesis(synthesize.run(build_config(SynthesizeConfig, args)))
    return 0


def cmd_train(args) -> int:
    from fer_ray.training import folds

    result = folds.train(build_config(TrainConfig, args))
    if "per_fold" in result:
        print("\n".join(folds.summary_lines(result)))
    else:
        print_report(result)
    return 0


def cmd_tune(args) -> int:
    from fer_ray.training import sweep

    print_sweep(sweep.run(build_config(TuneConfig, args)))
    return 0


def cmd_evaluate(args) -> int:
    from fer_ray import storage
    from fer_ray.training.evaluate import default_output, evaluate

    output = args.output or default_output(args.checkpoint, args.split)
    print_report(evaluate(args.checkpoint, args.data, args.split, output, workers=args.workers))
    print(f"  confusion matrix: {storage.join(output, 'confusion.png')}")
    return 0


def cmd_predict(args) -> int:
    from fer_ray.pipelines import predict

    print_predictions(predict.run(build_config(PredictConfig, args)))
    return 0


def cmd_label_videos(args) -> int:
    from fer_ray.pipelines import label_videos

    print_labelling(label_videos.run(build_config(LabelVideosConfig, args)))
    return 0


def cmd_export(args) -> int:
    from fer_ray.pipelines.export import run_export

    for kind, uri in run_export(args.checkpoint, args.output).items():
        print(f"{kind:12s} {uri}")
    return 0


def cmd_report(args) -> int:
    from fer_ray import reports

    print(f"results page: {reports.write(args.output)}")
    return 0


def cmd_models(args) -> int:
    from fer_ray.models import get_spec, list_models
    from fer_ray.models.pretrained import PRETRAINED

    for name in list_models():
        spec = get_spec(name)
        needs = "landmarks only" if not spec.input_size else (
            f"{spec.input_size}x{spec.input_size}x{spec.channels}" + (" + landmarks" if spec.needs_landmarks else "")
            + (f", clips of {spec.clip_length}" if spec.needs_clips else ""))
        print(f"{name:16s} {spec.label_set:10s} {needs:28s} lr {spec.default_lr:.0e} {spec.description}")
        if name in PRETRAINED:
            weights = PRETRAINED[name]
            print(f"{'':16s} pretrained (--checkpoint pretrained, --init pretrained): {weights.origin}; "
                  f"licence {weights.licence}; {weights.accuracy}")
    return 0


def cmd_sample_data(args) -> int:
    from fer_ray.sample_data import write_sample_data

    written = write_sample_data(args.output, seed=args.seed, scale=args.scale)
    for layout, info in written.items():
        print(f"{layout:10s} {info['files']:6d} files  {info['uri']}")
    return 0


def cmd_demo(args) -> int:
    from fer_ray.pipelines.demo import run_demo

    run_demo(args.output, workers=args.workers, train=not args.no_train)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fer-ray", description="Distributed facial emotion recognition on Ray.")
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    pre = commands.add_parser(
        "preprocess", help="raw images or videos -> aligned faces (or face clips) + landmarks (Parquet)",
        description="Detect, align and crop the faces of a raw dataset into Parquet shards: faces/ for an image "
                    "layout, clips/ (a face followed through each video) for a video layout (baum2, video_folder).")
    add_config_flags(pre, PreprocessConfig)
    pre.set_defaults(func=cmd_preprocess)
    synth = commands.add_parser("synthesize", help="fuse two expressions of each subject into 42 mixed classes",
                                description="Read a preprocess output's faces/, cut its subjects into work units, "
                                            "fuse every ordered pair of basic expressions; mixed/, manifest/, "
                                            "_summary.json and contact_sheets/ go to --output.")
    add_config_flags(synth, SynthesizeConfig)
    synth.set_defaults(func=cmd_synthesize)
    train = commands.add_parser(
        "train", help="train a model family on faces/ or clips/ shards with Ray Train",
        description="Train on preprocess outputs; checkpoints, metrics and plots go to --output.")
    add_config_flags(train, TrainConfig)
    train.set_defaults(func=cmd_train)
    tune = commands.add_parser("tune", help="sweep families and hyperparameters with Ray Tune (ASHA)",
                               description="Each trial is a Ray Train run; results.csv, best_config.yaml and "
                                           "trials.png go to --output.")
    add_config_flags(tune, TuneConfig)
    tune.set_defaults(func=cmd_tune)
    evaluate = commands.add_parser("evaluate", help="metrics and confusion matrix of a checkpoint on any shards")
    evaluate.add_argument("--checkpoint", required=True, help="run URI, directory or checkpoint.pt")
    evaluate.add_argument("--data", required=True, help="comma-separated preprocess output URIs")
    evaluate.add_argument("--split", default="test", choices=("train", "val", "test"))
    evaluate.add_argument("--output", default="", help="where metrics.json and confusion.png go "
                                                        "(default: <checkpoint>/eval-<split>)")
    evaluate.add_argument("--workers", type=int, default=0, help="classifier actors (0 = one per CPU)")
    evaluate.set_defaults(func=cmd_evaluate)
    pred = commands.add_parser("predict", help="class probabilities for every face in a folder of images",
                               description="Find and align the faces of new images as the checkpoint's training "
                                           "faces were, and classify them; one .parquet/.csv file or committed "
                                           "Parquet shards go to --output.")
    add_config_flags(pred, PredictConfig)
    pred.set_defaults(func=cmd_predict)
    label = commands.add_parser(
        "label-videos", help="who shows which expression when, in every video of a folder or prefix",
        description="Probe every video, decode time segments in parallel, find, track and classify faces on "
                    "frames sampled at --fps, join tracks per video; frames/, tracks/, segments/ (label runs), "
                    "videos/ (one row per input), webvtt/ and _summary.json go to --output.")
    add_config_flags(label, LabelVideosConfig)
    label.set_defaults(func=cmd_label_videos)
    export = commands.add_parser("export", help="TorchScript and ONNX of a checkpoint, checked against it")
    export.add_argument("--checkpoint", required=True, help="run URI, directory or checkpoint.pt")
    export.add_argument("--output", required=True, help="directory (local or s3://) for the exported files")
    export.set_defaults(func=cmd_export)
    report = commands.add_parser(
        "report", help="(re)build report.html, the results page of a job's output",
        description="Build the static results page (report.html, images inlined, no server needed) of the output "
                    "of any job and write it into that output: preprocess, synthesize, label-videos and predict "
                    "(found by _commit.json), tune (results.csv), train and evaluate (metrics.json).")
    report.add_argument("output", metavar="OUTPUT", help="the job's output folder or URI (local or s3://)")
    report.set_defaults(func=cmd_report)
    models = commands.add_parser("models", help="list the model families and what they take")
    models.set_defaults(func=cmd_models)
    sample = commands.add_parser("sample-data", help="write small sample datasets in every layout")
    sample.add_argument("--output", required=True, help="directory or s3:// URI to write into")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--scale", type=int, default=1, help="multiply the number of subjects (benchmarks)")
    sample.set_defaults(func=cmd_sample_data)
    demo = commands.add_parser("demo", help="sample data -> preprocess every layout -> train, test, sweep; local Ray")
    demo.add_argument("--output", default="./demo", help="where sample data and outputs go")
    demo.add_argument("--workers", type=int, default=0, help="face-stage actors (0 = one per CPU)")
    demo.add_argument("--no-train", action="store_true", help="stop after preprocessing")
    demo.set_defaults(func=cmd_demo)
    for command in commands.choices.values():
        # accepted after the command too; SUPPRESS keeps it from resetting a --verbose given before
        command.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
        # no prefixes: a flag renamed or removed must fail, not match another flag that starts like it
        command.allow_abbrev = False
    return parser


def command_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Each command's own parser, by command name (the flags a job entrypoint accepts)."""
    subparsers = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    return dict(subparsers.choices)


def parse_command_line(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """The parsed arguments; an unknown flag exits 2 at once with one line naming it."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        command = command_parsers(parser)[args.command]
        command.exit(2, f"{command.prog}: error: {unknown_arguments_message(command, unknown)}\n")
    return args


def unknown_arguments_message(command: argparse.ArgumentParser, unknown: list[str]) -> str:
    """`unrecognized arguments: --x (did you mean --y?); --help lists the flags of <command>`."""
    flags = [option for option in command._option_string_actions if option.startswith("--")]
    hints = []
    for argument in unknown:
        close = difflib.get_close_matches(argument.partition("=")[0], flags, n=1, cutoff=0.75)
        hints.append(f"{argument} (did you mean {close[0]}?)" if argument.startswith("--") and close else argument)
    return f"unrecognized arguments: {' '.join(hints)}; --help lists the flags of {command.prog}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_command_line(build_parser(), argv)
    run_log = logs.RunLog(args.command)
    if args.command in DATA_COMMANDS:
        from fer_ray import runtime

        runtime.want_dashboard(False)
    try:
        log.info("fer-ray %s started: argv %s", args.command,
                 logs.redact(" ".join(config.shorten(arg, 1000) for arg in argv)))
        if args.verbose or args.command not in RAY_COMMANDS or run_log.path is None:
            return run_command(args, run_log)
        return run_quietly(args, run_log)
    finally:
        run_log.close()


def run_quietly(args: argparse.Namespace, run_log: logs.RunLog) -> int:
    """The command with Ray's own output (progress records, warnings, its C++ core's log
    lines, the workers' output) in the run log; the screen gets fer-ray's lines only."""
    from fer_ray import runtime

    with runtime.ray_output_to_log(run_log, args.command, f"fer-ray {args.command}", "--verbose"), \
            runtime.ray_of_one_command():
        return run_command(args, run_log)


def run_command(args: argparse.Namespace, run_log: logs.RunLog) -> int:
    """The command's exit code; a failure is one line on stderr, its details in the log."""
    try:
        code = run_until_sigterm(args)
    except ConfigError as err:
        log.error("configuration error: %s", err)
        print(f"fer-ray: configuration error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        log.error("fer-ray %s interrupted", args.command, exc_info=True)
        said = f": {interrupt}" if str(interrupt) else ""  # what the command knows of it, e.g. how to resume
        print(f"fer-ray {args.command}: interrupted{said} {run_log.details()}", file=sys.stderr)
        return 130
    except SystemExit as stop:
        if stop.code != signal.SIGTERM:
            raise
        log.error("fer-ray %s stopped by SIGTERM", args.command, exc_info=True)
        print(f"fer-ray {args.command}: stopped by SIGTERM; the same command again resumes an unfinished run "
              f"{run_log.details()}", file=sys.stderr)
        return 128 + signal.SIGTERM
    except Exception as err:
        log.error("fer-ray %s failed", args.command, exc_info=True)
        if args.verbose:
            traceback.print_exc(file=sys.stderr)
        print(failure_line(args.command, err, run_log), file=sys.stderr)
        return 1
    log.info("finished: exit code %s", code)
    return code


def run_until_sigterm(args: argparse.Namespace) -> int:
    """args.func(args); SIGTERM (`ray job stop`, a scheduler's or a user's kill) ends it in
    SystemExit(SIGTERM) from the first moment, as Ray's own handler does once Ray is up: the
    run's cleanup still happens (its lease released, Ray left) where the default action would
    end the process at once. The previous handler is back afterwards."""
    if args.command not in RAY_COMMANDS:
        return args.func(args)
    from fer_ray import runtime

    with runtime.signal_handlers_kept(signal.SIGTERM):
        if runtime.in_main_thread():
            signal.signal(signal.SIGTERM, runtime.exit_on_signal)
        return args.func(args)


STORAGE_DOWN = "storage still unreachable; the run can be resumed by running it again"
DISK_FULL = ("no space left on a disk it writes to (the output's, or Ray's temporary folder); the run can be "
             "resumed by running it again once there is room")
ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")


def failure_line(command: str, err: BaseException, run_log: logs.RunLog) -> str:
    """`fer-ray <command>: failed: <type>: <first line of the message> (details: <log>)`, of
    the error that caused it: a Ray task's error names only the task that raised it."""
    err = root_cause(err)
    lines = ANSI_CODES.sub("", str(err)).strip().splitlines()
    message = f": {config.shorten(lines[0], FAILURE_MESSAGE_CHARS)}" if lines else ""
    # Our retries gave up, or an outage hit I/O outside them (Ray Data's own checkpoint files):
    # either way the same words, the hint first so that shortening cannot cut it
    if isinstance(err, storage.StorageUnavailable) or storage.is_transient(err):
        return (f"fer-ray {command}: failed: {STORAGE_DOWN}; last error: {type(err).__name__}{message} "
                f"{run_log.details()}")
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        # its message only: Ray Data re-raises it with its own retry notice where the file name goes
        return f"fer-ray {command}: failed: {DISK_FULL}; last error: {err.strerror} {run_log.details()}"
    return f"fer-ray {command}: failed: {type(err).__name__}{message} {run_log.details()}"


def root_cause(err: BaseException) -> BaseException:
    """The error inside Ray's wrappers (a task's error and Ray Data's user-code error carry
    it as `cause` or `__cause__`); errors of our own and of other libraries are kept whole."""
    for _ in range(10):
        inner = getattr(err, "cause", None) or err.__cause__
        if not type(err).__module__.startswith("ray.") or not isinstance(inner, BaseException):
            break
        err = inner
    return err


if __name__ == "__main__":
    sys.exit(main())
