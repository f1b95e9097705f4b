"""The README's main job: sample data in every layout -> preprocess each (the BAUM-2-style
archive into clips), synthesize, train and sweep, and label the sample videos, on local Ray."""
from __future__ import annotations

import json

from fer_ray import storage
from fer_ray.config import IMAGE_LAYOUTS, PreprocessConfig
from fer_ray.pipelines import preprocess
from fer_ray.progress import status_text
from fer_ray.report import results_page
from fer_ray.runtime import start_ray

# Where each layout lives inside the sample-data tree.
SAMPLE_INPUTS = {"fer2013": "fer2013/fer2013.csv"}


def sample_input(data_uri: str, layout: str) -> str:
    return storage.join(data_uri, SAMPLE_INPUTS.get(layout, layout))


# Training data for the demo: FER2013-style sample faces of 48 subjects (scale 4), enough
# for held-out subjects to be recognised well above chance after a few epochs.
TRAIN_SCALE = 4


class Made:
    """What the demo made and where, for the table it ends with."""

    def __init__(self):
        self.rows: list[tuple[str, str, str]] = []

    def add(self, step: str, result: str, where: str) -> None:
        """One step done: its line now, its row in the final table."""
        self.rows.append((step, result, where))
        print(f"{step}: {result}", flush=True)

    def print_table(self) -> None:
        width = max(len(step) for step, _, _ in self.rows)
        print("\nwhat the demo made, and where (each output's results page: open it in a browser):")
        for step, _, where in self.rows:
            print(f"  {step:{width}s}  {results_page(where) or where}")


def run_demo(output: str, workers: int = 0, train: bool = True) -> list[dict]:
    from fer_ray.sample_data import write_sample_data

    data = storage.join(output, "data")
    print(f"writing sample data to {data}")
    write_sample_data(data)
    start_ray()
    made, summaries = Made(), []
    for layout in IMAGE_LAYOUTS:
        cfg = PreprocessConfig(layout=layout, input=sample_input(data, layout),
                               output=storage.join(output, "out", layout), workers=workers)
        summaries.append(preprocess.run(cfg))
        made.add(f"preprocess {layout}", preprocess_result(summaries[-1]), cfg.output)
    summaries.append(preprocess_sample_clips(output, data, made, workers))
    mixed = synthesize_mixed(output, made)
    if train:
        train_and_sweep(output, made, workers)
        train_mixed(output, mixed, made)
        train_clips(output, made)
    label_sample_videos(output, data, made, workers)
    made.print_table()
    return summaries


def preprocess_result(summary: dict) -> str:
    """`177 inputs -> 177 faces (ok=177) in 15.5 s`; a video layout counts clips."""
    made = f"{summary.get('faces', 0)} faces" if "clips" not in summary else f"{summary['clips']} clips"
    return (f"{summary.get('inputs', 0)} inputs -> {made} ({status_text(summary.get('status', {}))}) "
            f"in {summary['elapsed_s']} s")


def test_result(report: dict) -> str:
    return (f"test accuracy {report['accuracy']:.3f}, macro-F1 {report['macro_f1']:.3f} on {report['n']} held-out "
            f"samples after {report['epochs']} epochs")


def preprocess_sample_clips(output: str, data: str, made: Made, workers: int = 0) -> dict:
    """The BAUM-2-style sample archive -> clips/ of 16 frames (film strips on its contact sheet)."""
    summary = preprocess.run(PreprocessConfig(layout="baum2", input=sample_input(data, "baum2"),
                                              output=storage.join(output, "out", "baum2"), workers=workers))
    made.add("preprocess baum2", preprocess_result(summary), summary["output"])
    return summary


def synthesize_mixed(output: str, made: Made) -> str:
    """Seed 000's mixed emotions from the preprocessed JAFFE-style faces (region fusion), with
    every take of each expression: about 2,700 fused faces where the first take gives 420."""
    from fer_ray.config import SynthesizeConfig
    from fer_ray.pipelines import synthesize

    mixed = storage.join(output, "out", "jaffe-mixed")
    summary = synthesize.run(SynthesizeConfig(input=storage.join(output, "out", "jaffe"), output=mixed,
                                                  pick="every"))
    made.add("synthesize", f"{summary['inputs']} JAFFE-style faces of {summary['subjects_used']} "
             f"subjects -> {summary['mixed']} mixed faces in {len(summary['mixed_by_pair'])} of 42 classes", mixed)
    return mixed


def train_mixed(output: str, mixed: str, made: Made) -> None:
    """mixed_cnn on the 42 mixed classes for two epochs, as its learning test trains it: at its
    default rate (seed 000's 1e-4), without dropout or augmentation (with either, or at 1e-3,
    two epochs of these few thousand faces leave it near chance)."""
    from fer_ray.config import TrainConfig
    from fer_ray.training import trainer

    runs = storage.join(output, "runs", "mixed_cnn")
    report = trainer.run(TrainConfig(data=mixed, output=runs, model="mixed_cnn", epochs=2, dropout=0.0,
                                     augment=0.0, batch_size=16, workers=1, resume=False))
    made.add("train mixed_cnn", f"{test_result(report)} (chance is 0.024)", runs)


def train_clips(output: str, made: Made) -> None:
    """cnn_lstm on the sample archive's clips (16 frames, 48 px grey), tested on its held-out
    subjects: a few epochs show the clip path end to end (1 Ray Train worker)."""
    from fer_ray.config import TrainConfig
    from fer_ray.training import trainer

    clips = storage.join(output, "out", "baum2")
    runs = storage.join(output, "runs", "cnn_lstm")
    report = trainer.run(TrainConfig(data=clips, output=runs, model="cnn_lstm", label_set="canonical8", epochs=6,
                                     batch_size=8, workers=1, resume=False))
    made.add("train cnn_lstm (clips)", f"{test_result(report)} (a path check: a few dozen clips)", runs)


def train_and_sweep(output: str, made: Made, workers: int = 0) -> None:
    """Preprocess the larger FER2013-style sample, train dexpression_fer on it (tested on
    held-out subjects), then a 4-trial sweep over two families."""
    from fer_ray.config import TrainConfig, TuneConfig
    from fer_ray.sample_data import write_sample_data
    from fer_ray.training import sweep, trainer

    data = storage.join(output, "data-x4")
    write_sample_data(data, scale=TRAIN_SCALE, layouts=("fer2013",))
    faces = storage.join(output, "out", "fer2013-x4")
    summary = preprocess.run(PreprocessConfig(layout="fer2013", input=sample_input(data, "fer2013"), output=faces,
                                              workers=workers))
    made.add("preprocess fer2013 x4", preprocess_result(summary), faces)
    train = TrainConfig(data=faces, output=storage.join(output, "runs", "dexpression_fer"), epochs=10,
                        batch_size=32, workers=2, cpus_per_worker=0.5, resume=False)
    made.add("train dexpression_fer", test_result(trainer.run(train)), train.output)
    tune_cfg = TuneConfig(models="dexpression_fer,landmark_mlp", trials=4, grace_period=1, batch_sizes="16,32",
                          train=TrainConfig(data=faces, output=storage.join(output, "runs", "sweep"), epochs=3,
                                            workers=1, cpus_per_worker=0.5, resume=False))
    best = sweep.run(tune_cfg)["best"]
    made.add("sweep (4 trials)",
             f"best {best['model']}: val macro-F1 {best['best_val_macro_f1']:.3f} (lr {best['lr']:.2e}, "
             f"batch {best['batch_size']})", tune_cfg.train.output)


def label_sample_videos(output: str, data: str, made: Made, workers: int = 0) -> dict:
    """label-videos on the sample videos with the pretrained model, then what it found beside
    what the videos show (videos/expected.json). The pretrained model was trained on photos
    (FER2013's 7 classes), not on these drawings: it reads some of their expressions only."""
    from fer_ray.config import LabelVideosConfig
    from fer_ray.pipelines import label_videos
    videos, labels_uri = storage.join(data, "videos"), storage.join(output, "out", "videos")
    summary = label_videos.run(LabelVideosConfig(input=videos, output=labels_uri, checkpoint="pretrained",
                                                 workers=workers))
    made.add("label-videos",
             f"{summary.get('inputs', 0)} videos ({status_text(summary.get('status', {}))}) -> "
             f"{summary.get('tracks', 0)} tracks, {summary.get('label_runs', 0)} label runs; per video:", labels_uri)
    print_found_and_expected(labels_uri, json.loads(storage.read_bytes(storage.join(videos, "expected.json"))))
    return summary


def print_found_and_expected(labels_uri: str, expected: dict) -> None:
    """Per sample video: its status and, per face, the expressions shown and those found."""
    from fer_ray import results
    from fer_ray.sample_videos import first_box_per_track, label_sequence, track_of_face

    status = {row["video_uri"].rsplit("/", 1)[-1]: row for row in results.read_table(labels_uri, "videos").to_pylist()}
    runs = results.read_table(labels_uri, "segments").to_pylist()
    frames = results.read_table(labels_uri, "frames", ["video_uri", "track_id", "timestamp_s", "bbox"])
    first_boxes = first_box_per_track(frames.to_pylist())
    for name, video in expected["videos"].items():
        row = status.get(name, {})
        print(f"  {name}: {row.get('status', 'missing')} (expected {video['status']})"
              + (f", timeline {timeline_uri(row['webvtt'])}" if row.get("webvtt") else ""))
        boxes = first_boxes.get(name, {})
        for face in video["faces"]:
            shown = ", ".join(f"{r['label']} from {r['start_s']:g} s" for r in face["runs"])
            track = track_of_face(face["box_at_start"], boxes) if boxes else None
            found = label_sequence([r for r in runs if r["video_uri"].endswith("/" + name)
                                    and r["track_id"] == track]) if track is not None else []
            print(f"    {face['subject']}: shows {shown}; found "
                  + (f"(track {track}) " + ", ".join(f"{label} from {start:.1f} s" for start, label in found)
                     if found else "no track"))


def timeline_uri(webvtt_uri: str) -> str:
    """The timeline PNG written beside a video's WebVTT file."""
    return webvtt_uri.replace("/webvtt/", "/timelines/")[:-len(".vtt")] + ".png"
