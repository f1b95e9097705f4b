"""The Python API: each `fer-ray` command as a function, for notebooks and scripts.

A job function takes the fields of its command's config (fer_ray/config.py, what `--help`
lists), in any of the CLI's spellings:

- by the flag's name: `detector="dlib_hog"` is `--detector dlib_hog` (field `face.detector`);
- by dotted path: `**{"face.detector": "dlib_hog"}` is `--set face.detector=dlib_hog`;
- a group as a mapping, as in YAML: `face={"detector": "dlib_hog", "size": 64}`;
- `config=`: a YAML file (as `--config`), a config object or a mapping, applied first.

Precedence as on the command line: defaults < `config=` < the keywords, in their order.
Values are converted and checked exactly as the CLI does: a bad one raises
`fer_ray.ConfigError` naming the field, the value and the valid choices, before any Ray
work. Ray is joined as the CLI joins it (fer_ray.runtime.start_ray): the cluster this
process is connected to, the one RAY_ADDRESS names, or a new local instance.
Each function returns the summary the CLI prints, as a dict.

Quiet as the CLI is: a job function prints its own lines (progress, the path of its output)
and one line naming its run's log file, where Ray's own output goes (Ray Data's progress
records, warnings, the C++ core's log lines; in a notebook too). `verbose=True` shows that
output here instead, as `--verbose` does.

Pipelines import Ray and torch: they are imported inside the functions, so that
`import fer_ray` stays cheap.
"""
from __future__ import annotations

import functools
import inspect
import logging
import os
import textwrap
import typing

from fer_ray import config as configs
from fer_ray import logs
from fer_ray.config import (
    ConfigError,
    LabelVideosConfig,
    PredictConfig,
    PreprocessConfig,
    SynthesizeConfig,
    TrainConfig,
    TuneConfig,
)

# `config=`: a YAML file's path, a config object of the command's class, or a mapping as in YAML
ConfigSource = typing.Any


def make_config(cls: type, config: ConfigSource = None, fields: dict | None = None):
    """A `cls` config from `config=` (YAML path, config object or mapping) and then the keyword
    fields, converted and checked as the CLI's flags are (raises ConfigError)."""
    base, yaml_path, values = None, None, {}
    if isinstance(config, cls):
        base = config
    elif isinstance(config, (str, os.PathLike)):
        yaml_path = os.fspath(config)
    elif isinstance(config, dict):
        values = config
    elif config is not None:
        raise ConfigError(f"config: {configs.show(config)} is not a YAML file path, a {cls.__name__} or a mapping")
    cfg = configs.build(cls, yaml_path, base=base)
    configs.apply_dict(cfg, values)
    leaves, flags = configs.leaf_fields(cls), configs.flag_paths(cls)
    for key, value in (fields or {}).items():
        path = key if key in leaves else flags.get(key)
        if path:
            configs.set_field(cfg, path, value)
        else:  # a group given as a mapping; anything else is refused there as an unknown field
            configs.apply_dict(cfg, {key: value})
    return cfg


def fields_doc(cls: type) -> str:
    """The config's fields as a docstring section: name, type, default, help, choices."""
    defaults, helps = cls(), configs.field_help(cls)
    lines = [f"Fields ({cls.__name__}; keyword = the flag's name, dotted path in brackets):"]
    for path, (leaf, kind) in configs.leaf_fields(cls).items():
        default = defaults
        for name in path.split("."):
            default = getattr(default, name)
        where = "" if path == leaf else f" [{path}]"
        choices = configs.CHOICES.get(path)
        text = helps[path] + (f"; one of: {', '.join(choices)}" if choices else "")
        lines.append(f"    {leaf}{where}: {kind.__name__} = {default!r}")
        lines.append(textwrap.indent(textwrap.fill(text, 88), " " * 8))
    return "\n".join(lines)


VERBOSE_DOC = """
verbose: show Ray's own output (progress records, warnings, workers' output) here; by default
it goes to the run's log file, whose path is printed once (as the CLI's --verbose)."""


def quiet(command: str):
    """The job function with a `verbose` keyword (default False): Ray's own output in a run log
    file whose path is printed once (runtime.ray_output_to_log), as the CLI runs a command. A
    Ray instance the call starts stays up for the next call (a notebook's next cell)."""
    def wrap(function):
        @functools.wraps(function)
        def job(*args, verbose: bool = False, **fields):
            if verbose:
                return function(*args, **fields)
            from fer_ray import runtime

            run_log = logs.RunLog(command)
            try:
                if run_log.path is None:  # nowhere to put Ray's output: show it
                    return function(*args, **fields)
                with runtime.ray_output_to_log(run_log, command, f"fer_ray.{function.__name__}", "verbose=True"):
                    return logged(function, args, fields)
            finally:
                run_log.close()

        job.__doc__ = f"{inspect.cleandoc(function.__doc__ or '')}\n\n{VERBOSE_DOC.strip()}"
        job.__signature__ = with_verbose(inspect.signature(function))
        return job
    return wrap


def with_verbose(signature: inspect.Signature) -> inspect.Signature:
    """The signature with `verbose` added as a keyword (before **fields, where it has them)."""
    params = list(signature.parameters.values())
    at = next((i for i, p in enumerate(params) if p.kind is p.VAR_KEYWORD), len(params))
    verbose = inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=bool)
    return signature.replace(parameters=[*params[:at], verbose, *params[at:]])


def logged(function, args: tuple, fields: dict):
    """function(*args, **fields), its failure's traceback also in the run log."""
    try:
        return function(*args, **fields)
    except BaseException:
        logging.getLogger(logs.LIBRARY_LOGGER).error("fer_ray.%s failed", function.__name__, exc_info=True)
        raise


def documented(cls: type):
    """Append the fields of `cls` to the function's docstring (help() shows them)."""
    def attach(function):
        function.__doc__ = f"{inspect.cleandoc(function.__doc__ or '')}\n\n{fields_doc(cls)}\n"
        return function
    return attach


@documented(PreprocessConfig)
@quiet("preprocess")
def preprocess(config: ConfigSource = None, **fields) -> dict:
    """Raw dataset -> aligned faces with landmarks (faces/), or clips/ for video layouts; `fer-ray preprocess`.

    Returns the summary: counts by status, label and split, and where faces/, manifest/ and
    the contact sheet are. Example:

        fer_ray.preprocess(layout="jaffe", input="data/jaffe", output="out/jaffe", detector="dlib_hog")
    """
    from fer_ray.pipelines import preprocess as pipeline

    return pipeline.run(make_config(PreprocessConfig, config, fields))


@documented(SynthesizeConfig)
@quiet("synthesize")
def synthesize(config: ConfigSource = None, **fields) -> dict:
    """Fuse two expressions of each subject into the 42 mixed classes (mixed/); `fer-ray synthesize`.

        fer_ray.synthesize(input="out/jaffe", output="out/jaffe-mixed", method="pca")
    """
    from fer_ray.pipelines import synthesize as pipeline

    return pipeline.run(make_config(SynthesizeConfig, config, fields))


@documented(TrainConfig)
@quiet("train")
def train(config: ConfigSource = None, **fields) -> dict:
    """Train a model family with Ray Train and test its best checkpoint; `fer-ray train`.

    Returns the test report (accuracy, macro-F1, per-class recall, confusion, where the
    checkpoint and plots are); with `folds=K` (K > 1), the subject folds' summary (each fold's
    test figures, their mean and spread), as `--folds K`.

        fer_ray.train(data="out/fer2013", model="dexpression_fer", epochs=5, output="runs/fer")
    """
    from fer_ray.training import folds

    return folds.train(make_config(TrainConfig, config, fields))


@documented(TuneConfig)
@quiet("tune")
def tune(config: ConfigSource = None, **fields) -> dict:
    """Sweep families and hyperparameters with Ray Tune (ASHA); `fer-ray tune`.

    Training fields are under `train` (flags by name: `epochs=4` is train.epochs).

        fer_ray.tune(data="out/fer2013", models="dexpression_fer,enm", trials=4, epochs=4, output="runs/sweep")
    """
    from fer_ray.training import sweep

    return sweep.run(make_config(TuneConfig, config, fields))


@quiet("evaluate")
def evaluate(checkpoint: str, data: str, split: str = "test", output: str = "", workers: int = 0) -> dict:
    """Metrics of a checkpoint on one split of any shards; `fer-ray evaluate`.

    checkpoint: run URI, directory or checkpoint.pt. data: comma-separated preprocess output
    URIs. split: train, val or test. output: where metrics.json and confusion.png go (default
    <checkpoint>/eval-<split>). workers: classifier actors (0 = one per CPU).
    Returns the report written to metrics.json.
    """
    if split not in configs.SPLITS:
        raise ConfigError(f"split: {configs.show(split)} is not valid; choose one of: {', '.join(configs.SPLITS)}")
    workers = configs.coerce("workers", int, workers)
    if workers < 0:
        raise ConfigError(f"workers: {configs.show(workers)} must be >= 0")
    from fer_ray.training.evaluate import default_output
    from fer_ray.training.evaluate import evaluate as run_evaluation

    return run_evaluation(checkpoint, data, split, output or default_output(checkpoint, split), workers=workers)


@documented(PredictConfig)
@quiet("predict")
def predict(config: ConfigSource = None, **fields) -> dict:
    """Class probabilities for every face in new images (or clips); `fer-ray predict`.

    Read the result with fer_ray.read_predictions(output).

        fer_ray.predict(checkpoint="pretrained", input="photos", output="labels.parquet")
    """
    from fer_ray.pipelines import predict as pipeline

    return pipeline.run(make_config(PredictConfig, config, fields))


@documented(LabelVideosConfig)
@quiet("label-videos")
def label_videos(config: ConfigSource = None, **fields) -> dict:
    """Who shows which expression when, in every video of a folder or prefix; `fer-ray label-videos`.

    Read the result with fer_ray.read_labels(output, table="tracks") (or frames, segments, videos).

        fer_ray.label_videos(input="videos", output="out/labels", fps=5)
    """
    from fer_ray.pipelines import label_videos as pipeline

    return pipeline.run(make_config(LabelVideosConfig, config, fields))


@quiet("export")
def export(checkpoint: str, output: str) -> dict[str, str]:
    """TorchScript and ONNX of a checkpoint, each checked against it; `fer-ray export`.

    Returns {kind: URI} of the written files.
    """
    from fer_ray.pipelines.export import run_export

    return run_export(checkpoint, output)


def write_sample_data(output: str, seed: int = 0, scale: int = 1, layouts=None) -> dict:
    """Small sample datasets in every layout (or those listed) under `output`; `fer-ray sample-data`.

    Returns {layout: {"uri": ..., "files": n}}; a layout's input for preprocess is its uri
    (fer2013: the CSV inside it, `<uri>/fer2013.csv`).
    """
    from fer_ray.sample_data import write_sample_data as write

    return write(output, seed=seed, scale=scale, layouts=layouts)
