"""Video labelling throughput: our `label-videos` job vs a serial loop, on the same videos in one run.

Both sides use the pretrained mini_xception and the face settings its checkpoint names (Haar
detector, dlib landmarks, a square margin crop, 64 px grey), sampling --fps frames per second:
  (a) ours      fer_ray.pipelines.label_videos.run on local Ray (started before the clock,
                as on a running cluster; actor start-up, probing, segments, classification,
                the per-video reduce, Parquet, WebVTT and timeline PNGs all inside the clock);
  (b) serial    as py-feat and OpenFace run: one process decodes every frame with PyAV in
                order, takes every k-th (k = round(video fps / --fps)) and runs the same face
                extractor's detector, landmarker and crop and the same classify stage on it,
                one frame and one face at a time (no tracking, no outputs written). Same
                decoder threading as ours; OpenCV keeps its default threads, torch gets
                --serial-threads (1: a serial loop on one core; 0 = torch's default).
Scenarios: one long video, and many short ones (synthetic faces of fer_ray.vision.synthetic_face
moving over a grey background, expression changing every few seconds, H.264 at 25 fps). Rounds
alternate (a) and (b) and the medians are reported (a shared machine drifts within minutes).
Printed: video-seconds per wall-second for both sides, per core, the ratio a/b, the share of
(b)'s time in decode / detect / landmarks / crop / classify, for (a) how much of the cores'
wall time the stages themselves report (videos/ elapsed_s: probe + segments + reduce), and the
CPU-seconds per video-second of both, (a)'s split by process role (segment actors, classify
actor, driver, task workers (Ray's worker processes of the job's tasks: probe, shuffle, reduce,
writes), Ray's daemons (raylet, GCS, dashboard and agents)), read with psutil over
this process and its descendants. CPU time moves less than wall time when others load the
machine. A first 4 s video is labelled before any clock ("warm-up": Ray's workers import once,
as on a running cluster); its wall and CPU time are printed, the start-up every run pays.

The memory part runs the job on a short video and on one 4x longer (short segments, so both
are cut into many) and prints the peak RSS of the driver and of the segment actors during each
run, sampled every 50 ms by a thread (psutil, the Ray workers that descend from this driver).

    .venv/bin/python bench/label_videos.py 2> /tmp/bench-label-videos.log   # Ray's log to a file
    .venv/bin/python bench/label_videos.py --scenario long --long-s 240 --rounds 3 --no-memory
    .venv/bin/python bench/label_videos.py --memory-only
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from pathlib import Path

import av
import numpy as np
import psutil
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fer_ray import results  # noqa: E402
from fer_ray.config import LabelVideosConfig  # noqa: E402
from fer_ray.models import checkpoint as ckpt  # noqa: E402
from fer_ray.pipelines import label_videos  # noqa: E402
from fer_ray.pipelines.predict import preprocess_config  # noqa: E402
from fer_ray.runtime import start_ray  # noqa: E402
from fer_ray.stages.classify import ClassifySettings, ClassifyStage  # noqa: E402
from fer_ray.stages.video import GREY_DETECTORS  # noqa: E402
from fer_ray.vision.align import align_face  # noqa: E402
from fer_ray.vision.faces import FaceExtractor  # noqa: E402
from fer_ray.vision.landmarks import landmarks_many  # noqa: E402
from fer_ray.vision.synthetic_face import draw_face, identity_for  # noqa: E402

RATE = 25
TILE = 120
EXPRESSIONS = ("neutral", "happy", "surprise", "sad", "anger")
# Identities whose face OpenCV's Haar cascade finds at every position of the drifting path on
# a 320x240 frame (some others it never finds there: the cascade runs on the equalised frame).
SUBJECTS = ("bench-1", "bench-3", "bench-4", "bench-6", "bench-7")
PARTS = ("decode", "detect", "landmarks", "crop", "classify")


# ------------------------------------------------------------------ videos
def face_tiles(subject: str) -> list[np.ndarray]:
    return [draw_face(name, identity_for(subject), size=TILE, color=True, face_scale=0.8)[0] for name in EXPRESSIONS]


def synthetic_frames(seconds: float, width: int, height: int, subject: str):
    """A face drifting slowly over a grey frame, its expression changing every 3 s."""
    tiles = face_tiles(subject)
    for n in range(int(seconds * RATE)):
        t = n / RATE
        x = int((width - TILE) * (0.5 + 0.5 * math.sin(t / 5)))
        y = int((height - TILE) * (0.5 + 0.5 * math.sin(t / 7)))
        frame = np.full((height, width, 3), 128, np.uint8)
        frame[y:y + TILE, x:x + TILE] = tiles[int(t // 3) % len(tiles)]
        yield frame


def make_video(path: Path, seconds: float, width: int, height: int, subject: str) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=RATE)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for image in synthetic_frames(seconds, width, height, subject):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def make_videos(folder: Path, lengths: list[float], width: int, height: int) -> float:
    """Videos of the given lengths in `folder`; returns their total seconds."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, seconds in enumerate(lengths):
        make_video(folder / f"clip{i:03d}.mp4", seconds, width, height, SUBJECTS[i % len(SUBJECTS)])
    return float(sum(lengths))


# ------------------------------------------------------------------ (b) the serial loop
class Timer:
    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, part: str):
        started = time.perf_counter()
        yield
        self.seconds[part] += time.perf_counter() - started


class SerialLabeller:
    """The job's face extractor and classifier, called frame by frame and face by face."""

    def __init__(self, cfg: LabelVideosConfig):
        path, state = ckpt.check(cfg.checkpoint)
        face_cfg = preprocess_config(state, cfg)  # what the job resolves from the checkpoint
        self.face = face_cfg.face
        detector = self.face.resolved_detector("folder")
        self.extractor = FaceExtractor(self.face, detector, face_cfg.device)
        self.color = "gray" if self.face.color == "gray" and detector in GREY_DETECTORS else "rgb24"
        self.classifier = ClassifyStage(ClassifySettings(path))
        self.fps = cfg.fps

    def label(self, path: Path, timer: Timer) -> tuple[int, int]:
        """(frames sampled, faces classified) of one video."""
        sampled = faces = 0
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # as ours
            every = max(1, round(float(stream.average_rate) / self.fps)) if self.fps else 1
            frames = container.decode(stream)
            for index in range(sys.maxsize):
                with timer("decode"):
                    frame = next(frames, None)
                    image = frame.to_ndarray(format=self.color) if frame is not None and index % every == 0 else None
                if frame is None:
                    break
                if image is not None:
                    sampled += 1
                    faces += self.label_frame(image, timer)
        return sampled, faces

    def label_frame(self, image: np.ndarray, timer: Timer) -> int:
        extractor = self.extractor
        with timer("detect"):
            boxes, scores = extractor.detector.detect(image)
            if self.face.largest_only:
                boxes, scores = boxes[:1], scores[:1]
        with timer("landmarks"):
            points = landmarks_many(extractor.landmarker, [image], [boxes])[0]
        for box, landmarks in zip(boxes, points):
            with timer("crop"):
                face, crop_landmarks = align_face(image, landmarks, self.face, crop=extractor.crop, box=box)
            with timer("classify"):
                crop = face[None, None] if face.ndim == 2 else face.transpose(2, 0, 1)[None]
                self.classifier({"image": crop, "landmarks": crop_landmarks[None].astype(np.float32)})
        return len(boxes)


def run_serial(labeller: SerialLabeller, videos: list[Path]) -> dict:
    timer = Timer()
    cpu = psutil.Process().cpu_times()
    started = time.perf_counter()
    sampled = faces = 0
    for path in videos:
        s, f = labeller.label(path, timer)
        sampled, faces = sampled + s, faces + f
    wall = time.perf_counter() - started
    used = psutil.Process().cpu_times()
    cpu_s = (used.user + used.system) - (cpu.user + cpu.system)
    return {"wall": wall, "cpu": cpu_s, "sampled": sampled, "faces": faces, "parts": dict(timer.seconds)}


# ------------------------------------------------------------------ (a) our job
def job_config(folder: Path, out: str, args, **overrides) -> LabelVideosConfig:
    return LabelVideosConfig(input=str(folder), output=out, checkpoint="pretrained", fps=args.fps,
                             segment_s=overrides.get("segment_s", args.segment_s), workers=args.workers)


def run_ours(folder: Path, out: str, args, period_s: float = 1.0, **overrides) -> dict:
    sampler = ProcessSampler(period_s)
    sampler.start()
    started = time.perf_counter()
    try:
        summary = label_videos.run(job_config(folder, out, args, **overrides))
    finally:
        wall = time.perf_counter() - started
        sampler.stop()
    if set(summary["status"]) != {"ok"}:
        raise SystemExit(f"our job did not label every video: {summary['status']}")
    videos = results.read_table(out, "videos", ["elapsed_s", "n_segments"]).to_pydict()
    return {"wall": wall, "sampled": summary["frames_sampled"], "faces": summary["frames"],
            "busy": float(sum(videos["elapsed_s"])), "segments": int(sum(videos["n_segments"])),
            "cpu": dict(sampler.cpu_s), "peak_rss": dict(sampler.peak_rss), "started": dict(sampler.started)}


# ------------------------------------------------------------------ measuring
def scenario(name: str, folder: Path, video_s: float, labeller: SerialLabeller, args,
             tmp: Path) -> tuple[float, float]:
    """(ours, serial) video-seconds per wall-second, medians of the rounds."""
    videos = sorted(folder.glob("*.mp4"))
    ours, serial = [], []
    for i in range(args.rounds):
        ours.append(run_ours(folder, str(tmp / f"out-{name}-{i}"), args))
        serial.append(run_serial(labeller, videos))
        print(f"  round {i + 1}: ours {video_s / ours[-1]['wall']:.1f} video-s/s, "
              f"serial {video_s / serial[-1]['wall']:.1f} video-s/s", flush=True)
    a = statistics.median(video_s / r["wall"] for r in ours)
    b = statistics.median(video_s / r["wall"] for r in serial)
    report_scenario(name, len(videos), video_s, ours, serial, a, b)
    return a, b


def report_scenario(name: str, n_videos: int, video_s: float, ours: list, serial: list, a: float, b: float) -> None:
    cores = os.cpu_count() or 1
    last_a, last_b = ours[-1], serial[-1]
    print(f"{name}: {n_videos} video(s), {video_s:.0f} s of video, {cores} cores (medians of {len(ours)} rounds)")
    print(f"  (a) ours   {a:7.1f} video-s per wall-s = {a / cores:6.1f}x real time per core; "
          f"{last_a['segments']} segments, {last_a['sampled']} frames sampled, {last_a['faces']} faces; "
          f"stages report {last_a['busy']:.1f} s busy in {last_a['wall']:.1f} s x {cores} cores "
          f"({100 * last_a['busy'] / (last_a['wall'] * cores):.0f}%)")
    print(f"  (b) serial {b:7.1f} video-s per wall-s = {b:6.1f}x real time per core (one process, "
          f"{last_b['cpu'] / last_b['wall']:.2f} cores busy on average); "
          f"{last_b['sampled']} frames sampled, {last_b['faces']} faces")
    cpu_a = sum(last_a["cpu"].values())
    print(f"      CPU-s per video-s (last round; a busy machine slows wall time, less so this): "
          f"ours {cpu_a / video_s:.3f} (" + ", ".join(f"{role} {100 * spent / cpu_a:.0f}%" for role, spent in
                                           sorted(last_a["cpu"].items())) + f"), serial {last_b['cpu'] / video_s:.3f}")
    print("      processes started during (a)'s run: "
          + (", ".join(f"{role} {n}" for role, n in sorted(last_a["started"].items())) or "none"))
    parts = last_b["parts"]
    total = sum(parts.values())
    print("      serial time: " + ", ".join(f"{p} {100 * parts.get(p, 0) / total:.0f}%" for p in PARTS)
          + f" (of {total:.1f} s)")
    print(f"  a/b = {a / b:.2f} (target >= 1.6); ours per core {a / cores:.1f}x real time (target >= 10); "
          f"serial torch threads {torch.get_num_threads()}")


# ------------------------------------------------------------------ memory
ROLES = {"SegmentStage": "segment actors", "ClassifyStage": "classify actor"}


def role_of(process: psutil.Process, driver: int) -> str:
    """What a process is doing now, from its Ray title (a task worker's title names its task)."""
    if process.pid == driver:
        return "driver"
    title = " ".join(process.cmdline())
    default = "task workers" if title.startswith("ray::") else "Ray's daemons"
    return next((role for marker, role in ROLES.items() if marker in title), default)


class ProcessSampler(threading.Thread):
    """Until stopped, every period_s: the peak RSS of this process (the driver) and of each role
    (segment actors, ...), and the CPU seconds each role spent, over this process and its
    descendants (the local Ray instance: raylet, GCS, workers). A worker's CPU time is counted
    from when the sampler started (or from the worker's birth) to the last sample that saw it."""

    def __init__(self, period_s: float):
        super().__init__(daemon=True)
        self.period_s = period_s
        self.peak_rss: dict[str, int] = defaultdict(int)
        self.cpu_s: dict[str, float] = defaultdict(float)
        self.seen: dict[int, float] = {}
        self.started: Counter = Counter()  # processes first seen during the run, by role
        self.stopped = threading.Event()
        self.sample(count=False)  # the CPU already spent by processes alive now is not this run's

    def run(self) -> None:
        while not self.stopped.wait(self.period_s):
            self.sample()
        self.sample()

    def sample(self, count: bool = True) -> None:
        me = psutil.Process()
        for process in [me, *me.children(recursive=True)]:
            try:
                with process.oneshot():
                    role, rss, times = role_of(process, me.pid), process.memory_info().rss, process.cpu_times()
            except psutil.Error:
                continue  # a worker that just exited
            spent = times.user + times.system
            if count and process.pid not in self.seen:
                self.started[role] += 1
            if count:
                self.cpu_s[role] += spent - self.seen.get(process.pid, 0.0)
            self.seen[process.pid] = spent
            self.peak_rss[role] = max(self.peak_rss[role], rss)

    def stop(self) -> None:
        self.stopped.set()
        self.join()


def memory(args, tmp: Path, folders: dict) -> None:
    rows = {name: run_ours(folders[name], str(tmp / f"out-{name}"), args, period_s=0.05,
                           segment_s=args.memory_segment_s) for name in ("memory-short", "memory-long")}
    mib = {name: (row["peak_rss"]["driver"] / 2**20, row["peak_rss"]["segment actors"] / 2**20,
                  row["peak_rss"]["classify actor"] / 2**20) for name, row in rows.items()}
    for name, row in rows.items():
        print(f"  {name}: {row['segments']} segments of {args.memory_segment_s:g} s, {row['sampled']} frames sampled; "
              "peak RSS " + ", ".join(f"{role} {rss / 2**20:.0f} MiB" for role, rss in sorted(row["peak_rss"].items())))
    (short_driver, short_actor, short_classify), (long_driver, long_actor, long_classify) = mib.values()
    print(f"memory ({args.memory_s:g} s vs {4 * args.memory_s:g} s of {args.width}x{args.height} video): "
          f"driver peak short={short_driver:.0f} MiB long={long_driver:.0f} MiB; "
          f"segment actor peak short={short_actor:.0f} MiB long={long_actor:.0f} MiB "
          f"(growth {100 * (long_actor - short_actor) / max(short_actor, 1):+.1f}%); "
          f"classify actor peak short={short_classify:.0f} MiB long={long_classify:.0f} MiB")


# ------------------------------------------------------------------ main
def short_lengths(count: int) -> list[float]:
    return [5.0 + (i % 6) for i in range(count)]  # 5 to 10 s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=("both", "long", "short"), default="both")
    # 15 minutes of video in each scenario: a run's start-up (actors importing torch, OpenCV and
    # dlib and loading their models, about 10 CPU-s) is paid once per run, as on an archive
    parser.add_argument("--long-s", type=float, default=900.0, help="seconds of the long video")
    parser.add_argument("--short", type=int, default=120, help="number of short videos (5-10 s each)")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--fps", type=float, default=5.0, help="frames sampled per second of video")
    parser.add_argument("--segment-s", type=float, default=60.0, help="the job's segment length")
    parser.add_argument("--workers", type=int, default=0, help="the job's segment actors (0 = one per CPU)")
    parser.add_argument("--serial-threads", type=int, default=1,
                        help="torch threads of the serial loop (0 = torch's default: one per core; a "
                             "one-face forward gains little from two, and they spin when others load the machine)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of (a) and (b); medians kept")
    parser.add_argument("--memory-s", type=float, default=60.0,
                        help="memory: the short video's seconds (long = 4x); its faces should fill one classify "
                             "batch (256), or the classify actor's peak grows up to the batch size")
    parser.add_argument("--memory-segment-s", type=float, default=10.0, help="memory: the job's segment length")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    parser.add_argument("--memory-only", action="store_true", help="only the memory measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        folders, seconds = make_inputs(args, tmp)  # before Ray starts: encoding is not measured
        start_ray()
        print(f"load before: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores", flush=True)
        warm = run_ours(folders["warm-up"], str(tmp / "out-warm-up"), args)  # Ray's idle workers import once
        print(f"warm-up (4 s video, first run): {warm['wall']:.1f} s wall, {sum(warm['cpu'].values()):.1f} CPU-s",
              flush=True)
        if args.serial_threads:
            torch.set_num_threads(args.serial_threads)  # this process only: Ray's actors set their own
        labeller = SerialLabeller(job_config(tmp, "-", args))
        again = run_ours(folders["warm-up"], str(tmp / "out-warm-up-2"), args)
        print(f"start-up of a run (the same 4 s video again): {again['wall']:.1f} s wall, "
              f"{sum(again['cpu'].values()):.1f} CPU-s (" + ", ".join(
                  f"{role} {spent:.1f}" for role, spent in sorted(again["cpu"].items())) + ")", flush=True)
        rates = {name: scenario(name, folders[name], seconds[name], labeller, args, tmp)
                 for name in ("long", "short") if name in folders}
        if "memory-short" in folders:
            memory(args, tmp, folders)
        print(f"load after: {os.getloadavg()[0]:.2f} (1 min)")
        for name, (a, b) in rates.items():
            print(f"bench label-videos {name}: ours={a:.1f} video-s/s, baseline={b:.1f} video-s/s, "
                  f"ratio={a / b:.2f} (target >= 1.6)")


def make_inputs(args, tmp: Path) -> tuple[dict[str, Path], dict[str, float]]:
    """The folders of videos this run measures, and their total seconds."""
    lengths = {"warm-up": [4.0]}
    if not args.memory_only:
        if args.scenario in ("long", "both"):
            lengths["long"] = [args.long_s]
        if args.scenario in ("short", "both"):
            lengths["short"] = short_lengths(args.short)
    if not args.no_memory:
        lengths["memory-short"], lengths["memory-long"] = [args.memory_s], [4 * args.memory_s]
    folders = {name: tmp / name for name in lengths}
    seconds = {name: make_videos(folders[name], lengths[name], args.width, args.height) for name in lengths}
    return folders, seconds


if __name__ == "__main__":
    main()
