"""`fer-ray <command>`: each command is one pipeline function.

Config precedence: field defaults < `--config file.yaml` < `--set path=value` < flags.
Every config field has a flag named after its leaf (`face.detector` -> `--detector`).
"""
from __future__ import annotations

import argparse
import json
import sys

from fer_ray import config
from fer_ray.config import ConfigError, PreprocessConfig


def add_config_flags(parser: argparse.ArgumentParser, cfg_cls: type) -> None:
    parser.add_argument("--config", help="YAML file of config fields (nested as in the written config.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                        help="set any config field by dotted path, e.g. --set face.crop_width=2.2")
    defaults, helps = cfg_cls(), config.field_help(cfg_cls)
    for path, (leaf, kind) in config.leaf_fields(cfg_cls).items():
        choices = config.CHOICES.get(path)
        help_text = f"{helps[path]} [{path}; default {_get(defaults, path)!r}" + (
            f"; one of: {', '.join(choices)}]" if choices else "]")
        parser.add_argument(f"--{leaf.replace('_', '-')}", dest=path, default=argparse.SUPPRESS,
                            metavar=kind.__name__.upper(), help=help_text)


def _get(cfg, path: str):
    for name in path.split("."):
        cfg = getattr(cfg, name)
    return cfg


def build_config(cfg_cls: type, args: argparse.Namespace):
    """The config from defaults, YAML, --set and flags, in that order."""
    cfg = cfg_cls()
    if args.config:
        with open(args.config) as f:
            config.load_yaml(cfg, f.read())
    for item in args.set:
        path, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected PATH=VALUE")
        config.set_field(cfg, path.strip(), value)
    for path in config.leaf_fields(cfg_cls):
        if hasattr(args, path):
            config.set_field(cfg, path, getattr(args, path))
    return cfg


def cmd_preprocess(args) -> int:
    from fer_ray.pipelines import preprocess

    cfg = build_config(PreprocessConfig, args)
    summary = preprocess.run(cfg)
    print_summary(summary)
    return 0


def cmd_sample_data(args) -> int:
    from fer_ray.sample_data import write_sample_data

    written = write_sample_data(args.output, seed=args.seed, scale=args.scale)
    for layout, info in written.items():
        print(f"{layout:10s} {info['files']:6d} files  {info['uri']}")
    return 0


def cmd_demo(args) -> int:
    from fer_ray.pipelines.demo import run_demo

    run_demo(args.output, workers=args.workers)
    return 0


def print_summary(summary: dict) -> None:
    status = ", ".join(f"{k}={v}" for k, v in summary.get("status", {}).items())
    print(f"\n{summary['layout']}: {summary.get('inputs', 0)} inputs -> {summary.get('faces', 0)} faces "
          f"in {summary['elapsed_s']} s ({summary['images_per_s']} images/s)")
    print(f"  status: {status}")
    print(f"  faces by label: {json.dumps(summary.get('faces_by_label', {}))}")
    print(f"  faces by split: {json.dumps(summary.get('faces_by_split', {}))}")
    print(f"  faces: {summary['faces_uri']}\n  manifest: {summary['manifest_uri']}\n"
          f"  contact sheet: {summary['contact_sheet_uri']}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fer-ray", description="Distributed facial emotion recognition on Ray.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    pre = commands.add_parser("preprocess", help="raw image dataset -> aligned faces + landmarks (Parquet)",
                              description="Detect, align and crop faces of a raw dataset into Parquet shards.")
    add_config_flags(pre, PreprocessConfig)
    pre.set_defaults(func=cmd_preprocess)
    sample = commands.add_parser("sample-data", help="write small sample datasets in every layout")
    sample.add_argument("--output", required=True, help="directory or s3:// URI to write into")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--scale", type=int, default=1, help="multiply the number of subjects (benchmarks)")
    sample.set_defaults(func=cmd_sample_data)
    demo = commands.add_parser("demo", help="sample data -> preprocess every layout, on local Ray")
    demo.add_argument("--output", default="./demo", help="where sample data and outputs go")
    demo.add_argument("--workers", type=int, default=0, help="face-stage actors (0 = one per CPU)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"fer-ray: configuration error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
