"""Short videos of synthetic faces (fer_ray.vision.synthetic_face) whose expressions change at
known times, encoded in memory with PyAV: the `videos/` part of `fer-ray sample-data`, and
the makers the video tests use.

A video is a script: each face is a subject (an `identity_for` name), where its tile starts,
how many pixels it drifts per frame, and from which second it shows which expression. The
expression switches at once at those times, so the change times are exact; `expected()`
writes them down (videos/expected.json) for tests and users to check a labelling against.

The sample's faces are subjects of the JAFFE-style sample (jaffe-YM, ...), drawn by the same
generator: a model trained on that sample has seen these people and all their expressions.
"""
from __future__ import annotations

import io
import json
import zlib
from dataclasses import dataclass
from typing import Iterable

import av
import numpy as np

from fer_ray import labels
from fer_ray.schema import VideoStatus
from fer_ray.vision.synthetic_face import draw_face, identity_for

TILE = 120  # a face is drawn on a square tile of this side, pasted into the frame
RATE = 8  # frames per second of the sample videos: few frames keep the demo quick
BACKGROUND = 128
# x264's macroblock-tree rate control made different bytes from identical frames from run to
# run (two faces at 320x160: six runs, six results); without it, one result, as with its C code.
X264_OPTIONS = {"x264-params": "no-mbtree=1"}


@dataclass(frozen=True)
class FaceScript:
    """One face of a video: who, where its tile starts, its drift per frame (pixels, may be
    fractional: x = x0 + int(n * dx)), and (start second, expression) pairs in time order."""
    subject: str
    expressions: tuple[tuple[float, str], ...]
    x0: int = 0
    y0: int = 0
    dx: float = 0.0

    def expression_at(self, t: float) -> str:
        return [name for start, name in self.expressions if start <= t][-1]

    def runs(self, seconds: float) -> list[dict]:
        """The expressions as label runs [start_s, end_s) over a video of this length."""
        ends = [start for start, _ in self.expressions[1:]] + [seconds]
        return [{"start_s": start, "end_s": end, "label": name}
                for (start, name), end in zip(self.expressions, ends)]


@dataclass(frozen=True)
class VideoScript:
    """A whole video: frame size, length, rate and its faces (none: a plain moving ramp)."""
    width: int
    height: int
    seconds: float
    faces: tuple[FaceScript, ...] = ()
    rate: int = RATE


def face_tile(expression: str, subject: str, seed: int = 0, size: int = TILE) -> np.ndarray:
    """An RGB tile of `subject` (a synthetic_face identity) showing `expression` at its peak."""
    image, _ = draw_face(expression, identity_for(subject, seed), size=size, color=True, face_scale=0.8)
    return image


def frame_with(tiles: list[tuple[np.ndarray, int, int]], width: int, height: int) -> np.ndarray:
    """A grey frame with each (tile, x, y) pasted at x, y."""
    frame = np.full((height, width, 3), BACKGROUND, np.uint8)
    for tile, x, y in tiles:
        frame[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
    return frame


def ramp_frames(width: int, height: int, count: int) -> Iterable[np.ndarray]:
    """A horizontal grey ramp scrolling sideways: moving picture, no face."""
    ramp = np.tile(np.linspace(0, 255, width, dtype=np.uint8)[None, :, None], (height, 1, 3))
    return (np.roll(ramp, n, axis=1) for n in range(count))


def script_frames(script: VideoScript, seed: int = 0) -> Iterable[np.ndarray]:
    """The RGB frames of a script, drawn lazily (one tile per face and expression, drawn once)."""
    count = int(round(script.seconds * script.rate))
    if not script.faces:
        return ramp_frames(script.width, script.height, count)
    tiles = {(face.subject, name): face_tile(name, face.subject, seed)
             for face in script.faces for _, name in face.expressions}

    def frame(n: int) -> np.ndarray:
        t = n / script.rate
        return frame_with([(tiles[face.subject, face.expression_at(t)], face.x0 + int(n * face.dx), face.y0)
                           for face in script.faces], script.width, script.height)

    return (frame(n) for n in range(count))


def encode_mp4(frames: Iterable[np.ndarray], rate: int, options: dict | None = None, threads: int = 1) -> bytes:
    """H.264 in MP4, in memory: frame n (RGB) is shown at n / rate seconds. The same frames
    give the same bytes with the defaults: one encoder thread (x264's output depends on its
    thread count) and X264_OPTIONS (options None); threads 0 = x264's own choice."""
    options = X264_OPTIONS if options is None else options
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = None
        for image in frames:
            if stream is None:
                stream = container.add_stream("libx264", rate=rate, options=options)
                stream.width, stream.height, stream.pix_fmt = image.shape[1], image.shape[0], "yuv420p"
                stream.codec_context.thread_count = threads
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def encode_script(script: VideoScript, seed: int = 0, **encoding) -> bytes:
    return encode_mp4(script_frames(script, seed), script.rate, **encoding)


# ---------------------------------------------------------------- the sample's videos

# Subjects of the JAFFE-style sample (sample_data.JAFFE_SUBJECTS), all in the train split of
# its default subject split, so a model trained on that sample knows their faces; and ones
# OpenCV's Haar detector finds in every expression shown at this tile size (not all are).
# Happy and surprise only: such a model tells them apart on video frames surely, where models
# trained alike read neutral as fear on some subjects, mixed up happy, fear and disgust (all
# show teeth) and missed sad (tests/integration/test_label_videos_sample.py).
SAMPLE_SCRIPTS = {
    "one_face.mp4": VideoScript(240, 160, 6.0, (
        FaceScript("jaffe-YM", ((0.0, "happy"), (2.0, "surprise"), (4.0, "happy")), x0=20, y0=20, dx=0.5),)),
    "two_faces.mp4": VideoScript(320, 160, 6.0, (
        FaceScript("jaffe-UY", ((0.0, "surprise"), (3.0, "happy")), x0=4, y0=30, dx=0.75),
        FaceScript("jaffe-NM", ((0.0, "happy"), (2.5, "surprise")), x0=196, y0=10, dx=-0.75))),
    "no_face.mp4": VideoScript(160, 120, 3.0),
}
CORRUPT = "corrupt.mp4"  # random bytes under a video name
CORRUPT_BYTES = 6000


def sample_videos(seed: int = 0) -> list[tuple[str, bytes]]:
    """(name, bytes) of every sample video, the corrupt one and expected.json."""
    files = [(name, encode_script(script, seed)) for name, script in SAMPLE_SCRIPTS.items()]
    junk = np.random.default_rng([seed, CORRUPT_BYTES]).integers(0, 256, CORRUPT_BYTES, dtype=np.uint8)
    files.append((CORRUPT, junk.tobytes()))
    files.append(("expected.json", (json.dumps(expected(), indent=2) + "\n").encode()))
    return files


def expected() -> dict:
    """What a labelling of the sample videos should find: per video its videos/ status, and per
    face its subject, where it starts (box in pixels at t=0) and its expressions as label runs;
    `changes` lists the times an expression changes, the figures to check within a tolerance."""
    videos = {name: expected_video(script) for name, script in SAMPLE_SCRIPTS.items()}
    videos[CORRUPT] = {"status": VideoStatus.NOT_A_VIDEO.value, "faces": []}
    return {"fps": RATE, "videos": videos}


def expected_video(script: VideoScript) -> dict:
    faces = [{"subject": face.subject, "box_at_start": [face.x0, face.y0, face.x0 + TILE, face.y0 + TILE],
              "runs": face.runs(script.seconds),
              "changes": [{"time_s": start, "label": name} for start, name in face.expressions[1:]]}
             for face in script.faces]
    status = VideoStatus.OK if script.faces else VideoStatus.NO_FACE
    return {"status": status.value, "duration_s": script.seconds, "width": script.width, "height": script.height,
            "faces": faces}


# ---------------------------------------------------------------- checking a labelling

def label_sequence(runs: list[dict]) -> list[tuple[float, str]]:
    """Label runs of one track (any order) -> [(start_s, label)] in time order, neighbours with
    the same label merged: the expressions as found, comparable with FaceScript.expressions."""
    found: list[tuple[float, str]] = []
    for run in sorted(runs, key=lambda r: r["start_s"]):
        if not found or found[-1][1] != run["label"]:
            found.append((float(run["start_s"]), run["label"]))
    return found


def track_of_face(box_at_start: list[float], first_boxes: dict[int, list[float]]) -> int:
    """The track whose first box is centred nearest to where the expected face starts."""
    def centre(box):
        return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])

    return min(first_boxes, key=lambda track: np.linalg.norm(centre(first_boxes[track]) - centre(box_at_start)))


def first_box_per_track(frames: list[dict]) -> dict[str, dict[int, list[float]]]:
    """{video file name: {track: its box on its first frame}} from label-videos' frames/ rows."""
    boxes: dict[str, dict[int, tuple[float, list[float]]]] = {}
    for row in frames:
        tracks = boxes.setdefault(row["video_uri"].rsplit("/", 1)[-1], {})
        if row["track_id"] not in tracks or row["timestamp_s"] < tracks[row["track_id"]][0]:
            tracks[row["track_id"]] = (row["timestamp_s"], row["bbox"])
    return {name: {track: box for track, (_, box) in tracks.items()} for name, tracks in boxes.items()}


# ---------------------------------------------------------------- the BAUM-2-style archive

BAUM2_CLASSES = ("happy", "surprise", "sad", "anger")  # what the sample's clips show
BAUM2_SUBJECTS = 10  # per unit of scale
BAUM2_RATE = 23  # BAUM-2's frame rate
BAUM2_SIZE = (160, 120)  # width, height: small frames, a quick ingest
BAUM2_FACE_SCALE = 0.9  # the face's size in the frame (draw_face's face_scale)
BAUM2_LEVELS = 12  # intensity steps drawn per clip: frames of one step are the same drawing
AVI_BIT_RATE = 600_000  # FFmpeg's default (200 kb/s) leaves blocks on a 160x120 face
BAUM2_BROKEN = "S003/avi/099.avi"  # random bytes under a clip name, with a label file
BAUM2_UNLABELLED = "S005/avi/003.avi"  # a clip whose label file is missing


def baum2_clips(seed: int = 0, scale: int = 1) -> list[tuple[str, str, int]]:
    """(subject, clip stem, class) of every sample clip: each subject shows every class once,
    the first subject twice (BAUM-2's clips per subject are uneven)."""
    clips = []
    for number in range(1, BAUM2_SUBJECTS * scale + 1):
        subject = f"S{number:03d}"
        takes = 2 if number == 1 else 1
        expressions = [name for _ in range(takes) for name in BAUM2_CLASSES]
        clips += [(subject, f"{k + 1:03d}", name) for k, name in enumerate(expressions)]
    return clips


def unfolding(n: int, count: int, onset: float, apex: float) -> float:
    """Expression intensity of frame n of `count`: neutral until `onset` (a share of the
    clip), rising smoothly to the peak at `apex`, held after; in BAUM2_LEVELS steps."""
    share = n / max(count - 1, 1)
    rise = float(np.clip((share - onset) / (apex - onset), 0.0, 1.0))
    return round(rise * rise * (3 - 2 * rise) * BAUM2_LEVELS) / BAUM2_LEVELS


def baum2_clip(subject: str, stem: str, expression: str, seed: int = 0, size: tuple[int, int] = BAUM2_SIZE,
               face_scale: float = BAUM2_FACE_SCALE) -> bytes:
    """One clip as an AVI (MPEG-4 Part 2, as many BAUM-2 clips): 1-2 s at 23 fps, a face whose
    expression unfolds from neutral to its peak, drifting a little; frames of `size` (width,
    height)."""
    rng = np.random.default_rng([seed, zlib.crc32(f"baum2/{subject}/{stem}".encode())])
    count = int(rng.integers(BAUM2_RATE, 2 * BAUM2_RATE + 1))
    onset, apex = rng.uniform(0.05, 0.25), rng.uniform(0.55, 0.8)
    take = int(rng.integers(1 << 30))
    drift = rng.uniform(-0.3, 0.3)
    identity = identity_for(f"baum2-{subject}", seed)
    drawn: dict[float, np.ndarray] = {}

    def frame(n: int) -> np.ndarray:
        level = unfolding(n, count, onset, apex)
        if level not in drawn:  # the same take (pose, light) at every level: only the expression moves
            drawn[level], _ = draw_face(expression, identity, size[1], color=True, width=size[0],
                                        rng=np.random.default_rng(take), face_scale=face_scale, intensity=level,
                                        noise=0.0)
        return np.roll(drawn[level], int(round(n * drift)), axis=1)

    return encode_avi((frame(n) for n in range(count)), BAUM2_RATE)


def encode_avi(frames: Iterable[np.ndarray], rate: int) -> bytes:
    """MPEG-4 Part 2 in AVI, in memory: frame n (RGB) is shown at n / rate seconds."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="avi") as container:
        stream = None
        for image in frames:
            if stream is None:
                stream = container.add_stream("mpeg4", rate=rate)
                stream.bit_rate = AVI_BIT_RATE
                stream.width, stream.height, stream.pix_fmt = image.shape[1], image.shape[0], "yuv420p"
                stream.codec_context.thread_count = 1
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def label_text(class_name: str, float_form: bool) -> bytes:
    """A BAUM-2 label file: the CK+ code as CK+ writes it, or as a bare integer."""
    code = labels.CKPLUS.index(class_name)
    return (f"{float(code):16.7e}\n" if float_form else f"{code}\n").encode()


def baum2_archive(seed: int = 0, scale: int = 1, pool=None, size: tuple[int, int] = BAUM2_SIZE,
                  face_scale: float = BAUM2_FACE_SCALE) -> list[tuple[str, bytes]]:
    """(path, bytes) of the BAUM-2-style sample: <subject>/avi/<clip>.avi and
    <subject>/emotion/<clip>.txt (both label forms, alternating), one clip without its label
    file and one broken clip (random bytes). `size` and `face_scale` as for baum2_clip (the
    sample's are small frames filled by the face; bench/clips.py also draws bigger ones)."""
    clips = baum2_clips(seed, scale)
    mapper = pool.map if pool is not None else map
    videos = list(mapper(lambda clip: baum2_clip(*clip, seed=seed, size=size, face_scale=face_scale), clips))
    files = []
    for k, ((subject, stem, expression), video) in enumerate(zip(clips, videos)):
        files.append((f"{subject}/avi/{stem}.avi", video))
        if f"{subject}/avi/{stem}.avi" != BAUM2_UNLABELLED:
            files.append((f"{subject}/emotion/{stem}.txt", label_text(expression, float_form=k % 2 == 0)))
    junk = np.random.default_rng([seed, CORRUPT_BYTES, 2]).integers(0, 256, CORRUPT_BYTES, dtype=np.uint8)
    files.append((BAUM2_BROKEN, junk.tobytes()))
    files.append((BAUM2_BROKEN.replace("/avi/", "/emotion/").replace(".avi", ".txt"), label_text("happy", True)))
    return files
