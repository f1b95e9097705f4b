"""The README's main job: sample data in every layout -> preprocess each, on local Ray."""
from __future__ import annotations

import ray

from fer_ray import storage
from fer_ray.config import LAYOUTS, PreprocessConfig
from fer_ray.pipelines import preprocess

# Where each layout lives inside the sample-data tree.
SAMPLE_INPUTS = {"fer2013": "fer2013/fer2013.csv"}


def sample_input(data_uri: str, layout: str) -> str:
    return storage.join(data_uri, SAMPLE_INPUTS.get(layout, layout))


def run_demo(output: str, workers: int = 0) -> list[dict]:
    from fer_ray.cli import print_summary
    from fer_ray.sample_data import write_sample_data

    data = storage.join(output, "data")
    print(f"writing sample data to {data}")
    write_sample_data(data)
    ray.init(ignore_reinit_error=True)
    summaries = []
    for layout in LAYOUTS:
        cfg = PreprocessConfig(layout=layout, input=sample_input(data, layout),
                               output=storage.join(output, "out", layout), workers=workers)
        summaries.append(preprocess.run(cfg))
        print_summary(summaries[-1])
    print_totals(summaries)
    return summaries


def print_totals(summaries: list[dict]) -> None:
    print("\nlayout      inputs  faces  ok   images/s  contact sheet")
    for s in summaries:
        print(f"{s['layout']:10s} {s.get('inputs', 0):6d} {s.get('faces', 0):6d} "
              f"{s.get('status', {}).get('ok', 0):4d} {s['images_per_s']:9.1f}  {s['contact_sheet_uri']}")
