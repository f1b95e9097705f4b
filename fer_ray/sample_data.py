"""`fer-ray sample-data`: small sample datasets in every raw layout we read.

Faces are drawn by `fer_ray.vision.synthetic_face` (expression geometry follows the label,
the face follows the subject), plus real photos from scikit-image for the detector path.
Everything is deterministic for a seed (same bytes twice); `scale` multiplies the number
of subjects. Written under `output_uri` (a local directory or s3://bucket/prefix):

fer2013/fer2013.csv
    header `emotion,pixels,Usage`; one row per 48x48 grey face crop (a square box around
    jaw and brows, like FER2013's registered crops; a few degrees of roll), emotion in
    FER2013's coding (0 angry .. 6 neutral, no contempt). 12 subjects x 7 classes x 1-2
    takes (125 rows for seed 0). Usage by subject: subjects 0-7 Training, 8-9 PublicTest,
    10-11 PrivateTest; rows come in that order. FER2013 has no subject column, so the
    subject is not recoverable from the file (the split is what keeps them apart).
affectnet/{train_set,val_set}/images/<id>.jpg and annotations/<id>_{exp,val,aro,lnd}.npy
    224x224 RGB face crops. `_exp.npy` is a 0-d numpy string in the canonical coding
    (np.array('1'); `int(np.load(p))` works), `_val.npy`/`_aro.npy` 0-d numpy strings of a
    float in [-1, 1] (np.array('0.731'); `float(np.load(p))` works), `_lnd.npy` 136 float64,
    x,y interleaved, crop pixels. All 8 classes. Ids are integers, unique over both splits
    (train first). 8 train subjects and 3 val subjects (disjoint) x 8 classes x 1-2 takes
    (90 + 34 images for seed 0). AffectNet has no subject field: not recoverable here either.
jaffe/<II>.<CODE><take>.<n>.tiff
    256x256 grey TIFF, e.g. KA.AN1.39.tiff; 10 subjects (JAFFE's initials; with scale > 1
    the next ten are KAA, KLA, ...), codes AN DI FE HA NE SA SU, 2-3 takes each; n is a
    running number from 1 (177 files for seed 0). The subject is the part before the dot.
ckplus/cohn-kanade-images/S###/###/S###_###_########.png and
ckplus/Emotion/S###/###/S###_###_<last frame>_emotion.txt
    320x245 grey frames (half of CK+'s 640x490), frames 00000001-00000006 of a sequence
    morph from neutral to the peak expression; 10 subjects (S005, S012, ... every 7th)
    x 3 sequences (001-003) = 180 frames. The emotion file (one float such as
    `   3.0000000e+00\n`, CK+ coding 0 neutral .. 7 surprise) names the last frame and
    exists for 23 of the 30 sequences; the others are unlabelled, as in CK+. The labelled
    ones cover all 7 emotions (1-7; CK+ labels no sequence 0).
mpi/Subset 01/<class>/<actor>_<class>_NNN.png
    320x240 RGB frames (the real ones are 768x576). Real MPI file names start with a
    four-letter actor code (islf, juhm, cawm, ...): that prefix IS the subject (5 actors:
    islf juhm cawm mapm siwf; with scale > 1 also islb, juhb, ...); NNN numbers the takes
    of an actor and class. Classes anger disgust fear happy sad surprise x 2 takes, plus
    one take per actor of `agree_considered`, a real MPI class that is none of our
    emotions (its faces are drawn neutral; readers should report an unknown class):
    65 files.
folder/<class folder>/<image>
    320x240 RGB drawn faces named <canonical name>_<subject NNN>.jpg|.png (JPEG for even
    subjects, PNG for odd), 4 subjects per class, in synonym folders: neutral happiness
    Sad Surprised fearful disgusted angry contempt. Real photos:
    happiness/astronaut.jpg (skimage.data.astronaut(), a smiling face, 512x512);
    misc/lfw_000.png .. lfw_003.png (an unknown class: grey LFW faces from
    skimage.data.lfw_subset(), too small as shipped (25x25), upscaled to 100x100 and
    padded to 200x200 so that Haar and dlib HOG find them);
    Surprised/no_face_coffee.jpg (skimage.data.coffee(): no face, for the no_face path).
    38 files.
videos/one_face.mp4, two_faces.mp4, no_face.mp4, corrupt.mp4 and expected.json
    short H.264 MP4s at 8 fps (fer_ray.sample_videos): one face (JAFFE-style subject YM)
    happy, surprise from 2 s, happy again from 4 s (6 s, 240x160); two faces drifting towards
    each other, one (UY) surprise then happy from 3 s, the other (NM) happy then surprise
    from 2.5 s (6 s, 320x160); a moving grey ramp with no face (3 s); 6,000 random bytes named .mp4.
    expected.json states each video's status and each face's subject, start box, label
    runs and change times, for checking a labelling. The same for every seed but the
    faces' identities; `scale` does not apply. 5 files.

baum2/S###/avi/NNN.avi and baum2/S###/emotion/NNN.txt
    a BAUM-2-style archive (fer_ray.sample_videos.baum2_archive): 10 subjects (S001-S010; 10 x
    scale) each showing happy, surprise, sad and anger once (S001 twice: 12 clips), 160x120
    MPEG-4 AVIs of 1-2 s at 23 fps in which a drawn face unfolds from neutral to the peak of
    its expression (onset and apex vary per clip). Label files in CK+ coding, alternately as
    CK+ writes them (`   5.0000000e+00`) and as bare integers (`5`). S005/avi/003.avi has no
    label file (missing_annotation); S003/avi/099.avi is 6,000 random bytes (not_a_video).
    45 clip names (44 clips and the broken one), 89 files for scale 1.

About 10 MB and 15-20 s on 2 cores for scale 1. Lossless layouts (PNG, TIFF) are drawn
without sensor noise, which would triple their size; JPEG and CSV faces have it.
"""
from __future__ import annotations

import io
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import cv2
import numpy as np

from fer_ray import labels, sample_videos, storage
from fer_ray.vision.synthetic_face import draw_face, identity_for

# (valence, arousal) at the peak of each canonical expression (circumplex-model values).
AFFECT = {"neutral": (0.0, 0.0), "happy": (0.75, 0.45), "sad": (-0.65, -0.3),
          "surprise": (0.2, 0.75), "fear": (-0.6, 0.7), "disgust": (-0.65, 0.35),
          "anger": (-0.6, 0.65), "contempt": (-0.45, 0.2)}
JAFFE_SUBJECTS = ("KA", "KL", "KM", "KR", "MK", "NA", "NM", "TM", "UY", "YM")
MPI_ACTORS = ("islf", "juhm", "cawm", "mapm", "siwf")
MPI_CLASSES = ("anger", "disgust", "fear", "happy", "sad", "surprise")
MPI_UNKNOWN = "agree_considered"
FOLDER_NAMES = {"neutral": "neutral", "happy": "happiness", "sad": "Sad", "surprise": "Surprised",
                "fear": "fearful", "disgust": "disgusted", "anger": "angry", "contempt": "contempt"}

Files = list[tuple[str, bytes]]  # (path relative to the layout root, content)


def write_sample_data(output_uri: str, seed: int = 0, scale: int = 1, layouts=None) -> dict:
    """Write the sample layouts (default: all) under output_uri; {layout: {"uri": ..., "files": n}}."""
    layouts = list(LAYOUTS) if layouts is None else list(layouts)
    unknown = sorted(set(layouts) - set(LAYOUTS))
    if unknown:
        raise ValueError(f"unknown sample layouts {unknown}; choose from {list(LAYOUTS)}")
    if scale < 1:
        raise ValueError(f"scale must be an integer >= 1, got {scale!r}")
    result = {}
    # OpenCV and numpy release the GIL while drawing
    with ThreadPoolExecutor(os.cpu_count() or 2) as draw:
        for layout in layouts:
            root = storage.join(output_uri, layout)
            files = LAYOUTS[layout](seed, scale, draw)
            write_files(root, files)
            result[layout] = {"uri": root, "files": len(files)}
    return result


def write_files(root_uri: str, files: Files) -> None:
    """(relative path, bytes) pairs under a URI; object-store writes mostly wait, so 16 at once."""
    with ThreadPoolExecutor(16) as write:
        list(write.map(lambda f: storage.write_bytes(storage.join(root_uri, f[0]), f[1]), files))


# ---------------------------------------------------------------- helpers

def _rng(seed: int, *keys) -> np.random.Generator:
    """An rng per sample, so output does not depend on scheduling order."""
    return np.random.default_rng([seed, zlib.crc32("/".join(map(str, keys)).encode())])


def _takes(seed: int, *keys, low: int = 1, high: int = 2) -> int:
    return int(_rng(seed, "takes", *keys).integers(low, high + 1))


def _encode(img: np.ndarray, ext: str, rgb: bool = False) -> bytes:
    if rgb:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    params = {".jpg": [cv2.IMWRITE_JPEG_QUALITY, 90], ".png": [cv2.IMWRITE_PNG_COMPRESSION, 6]}.get(ext, [])
    ok, buf = cv2.imencode(ext, img, params)
    if not ok:
        raise RuntimeError(f"could not encode {ext}")
    return buf.tobytes()


def _npy(value) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(value))
    return buf.getvalue()


def _face_crop(img: np.ndarray, lm: np.ndarray, out: int, margin: float):
    """Square crop around jaw and brows (a face box), resized to out; landmarks follow."""
    lo, hi = lm[:27].min(0), lm[:27].max(0)
    side = int(round(margin * max(hi - lo)))
    x0, y0 = (lo + hi) / 2 - side / 2
    shift = np.float32([[1, 0, -x0], [0, 1, -y0]])
    crop = cv2.warpAffine(img, shift, (side, side), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    crop = cv2.resize(crop, (out, out), interpolation=cv2.INTER_AREA if out < side else cv2.INTER_CUBIC)
    return crop, (lm - [x0, y0]) * (out / side)


# ---------------------------------------------------------------- layouts

def _fer2013(seed: int, scale: int, pool) -> Files:
    n = 12 * scale

    def usage(s: int) -> str:
        return "Training" if s < n * 8 // 12 else "PublicTest" if s < n * 10 // 12 else "PrivateTest"

    jobs = [(s, e, t) for s in range(n) for e in labels.FER2013 for t in range(_takes(seed, "fer", s, e))]

    def row(job):
        s, e, t = job
        rng = _rng(seed, "fer2013", s, e, t)
        img, lm = draw_face(e, identity_for(f"fer2013-{s}", seed), 256, rng=rng, angle_deg=rng.normal(0, 4))
        crop, _ = _face_crop(img, lm, 48, rng.uniform(1.05, 1.2))
        return f"{labels.FER2013.index(e)},{' '.join(map(str, crop.ravel()))},{usage(s)}"

    rows = list(pool.map(row, jobs))  # subjects ascending, so Usage blocks come in order
    return [("fer2013.csv", ("emotion,pixels,Usage\n" + "\n".join(rows) + "\n").encode())]


def _affectnet(seed: int, scale: int, pool) -> Files:
    splits = [("train_set", s) for s in range(8 * scale)]
    splits += [("val_set", s) for s in range(8 * scale, 11 * scale)]
    jobs = [(split, s, e, t) for split, s in splits for e in labels.CANONICAL
            for t in range(_takes(seed, "affectnet", s, e))]
    per_image = pool.map(lambda ij: _affectnet_image(seed, ij[0], *ij[1]), enumerate(jobs))
    return [f for files in per_image for f in files]


def _affectnet_image(seed: int, image_id: int, split: str, s: int, e: str, t: int) -> Files:
    rng = _rng(seed, "affectnet", s, e, t)
    img, lm = draw_face(e, identity_for(f"affectnet-{s}", seed), 256, color=True, rng=rng,
                        angle_deg=rng.normal(0, 5))
    crop, lm = _face_crop(img, lm, 224, rng.uniform(1.2, 1.4))
    val, aro = np.clip(np.array(AFFECT[e]) * rng.uniform(0.7, 1.1) + rng.normal(0, 0.06, 2), -1, 1)
    ann = f"{split}/annotations/{image_id}"
    return [(f"{split}/images/{image_id}.jpg", _encode(crop, ".jpg", rgb=True)),
            (f"{ann}_exp.npy", _npy(str(labels.CANONICAL_INDEX[e]))),
            (f"{ann}_val.npy", _npy(f"{val:.6f}")), (f"{ann}_aro.npy", _npy(f"{aro:.6f}")),
            (f"{ann}_lnd.npy", _npy(lm.astype(np.float64).ravel()))]


def _jaffe(seed: int, scale: int, pool) -> Files:
    names = [JAFFE_SUBJECTS[i % 10] + ("" if i < 10 else chr(64 + i // 10))  # KA .. YM, KAA ..
             for i in range(10 * scale)]
    jobs = [(who, code, t) for who in names for code in labels.JAFFE
            for t in range(1, 1 + _takes(seed, "jaffe", who, code, low=2, high=3))]

    def tiff(numbered):
        n, (who, code, t) = numbered
        rng = _rng(seed, "jaffe", who, code, t)
        img, _ = draw_face(labels.JAFFE[code], identity_for(f"jaffe-{who}", seed), 256, rng=rng,
                           face_scale=1.1, noise=0.0)  # lossless files stay small without sensor noise
        return f"{who}.{code}{t}.{n}.tiff", _encode(img, ".tiff")

    return list(pool.map(tiff, enumerate(jobs, start=1)))


def _ckplus(seed: int, scale: int, pool) -> Files:
    emotions = labels.CKPLUS[1:]  # CK+ labels sequences 1-7; 0 (neutral) is the onset frame
    seqs = [(5 + 7 * i, k + 1, emotions[(3 * i + k) % 7], (i + k) % 4 != 3)
            for i in range(10 * scale) for k in range(3)]
    return [f for files in pool.map(lambda q: _ckplus_sequence(seed, *q), seqs) for f in files]


def _ckplus_sequence(seed: int, subject: int, seq: int, emotion: str, labelled: bool,
                     frames: int = 6) -> Files:
    sub, sq = f"S{subject:03d}", f"{seq:03d}"
    identity = identity_for(f"ckplus-{sub}", seed)
    out = []
    for f in range(1, frames + 1):
        rng = _rng(seed, "ckplus", sub, sq)  # same take throughout: only the intensity moves
        img, _ = draw_face(emotion, identity, 245, rng=rng, width=320, face_scale=0.95, noise=0.0,
                           intensity=((f - 1) / (frames - 1)) ** 0.8)
        out.append((f"cohn-kanade-images/{sub}/{sq}/{sub}_{sq}_{f:08d}.png", _encode(img, ".png")))
    if labelled:
        code = f"{float(labels.CKPLUS.index(emotion)):16.7e}\n"
        out.append((f"Emotion/{sub}/{sq}/{sub}_{sq}_{frames:08d}_emotion.txt", code.encode()))
    return out


def _mpi(seed: int, scale: int, pool) -> Files:
    actors = [MPI_ACTORS[i % 5] if i < 5 else f"{MPI_ACTORS[i % 5][:3]}{chr(97 + i // 5)}"  # islf, islb
              for i in range(5 * scale)]
    jobs = [(a, c, t) for a in actors for c in MPI_CLASSES for t in (1, 2)]
    jobs += [(a, MPI_UNKNOWN, 1) for a in actors]

    def png(job):
        actor, cls, t = job
        rng = _rng(seed, "mpi", actor, cls, t)
        expression = cls if cls in labels.CANONICAL_INDEX else "neutral"  # agreeing looks neutral
        img, _ = draw_face(expression, identity_for(f"mpi-{actor}", seed), 240, color=True, rng=rng,
                           width=320, face_scale=0.85, noise=0.0)
        return f"Subset 01/{cls}/{actor}_{cls}_{t:03d}.png", _encode(img, ".png", rgb=True)

    return list(pool.map(png, jobs))


def _folder(seed: int, scale: int, pool) -> Files:
    jobs = [(e, s) for e in labels.CANONICAL for s in range(4 * scale)]

    def photo(job):
        e, s = job
        rng = _rng(seed, "folder", e, s)
        ext = ".jpg" if s % 2 == 0 else ".png"
        img, _ = draw_face(e, identity_for(f"folder-{s}", seed), 240, color=True, rng=rng, width=320,
                           face_scale=rng.uniform(0.7, 0.9), angle_deg=rng.normal(0, 4),
                           noise=0.008 if ext == ".jpg" else 0.0)
        return f"{FOLDER_NAMES[e]}/{e}_{s:03d}{ext}", _encode(img, ext, rgb=True)

    return list(pool.map(photo, jobs)) + _real_photos()


def _real_photos() -> Files:
    from skimage import data  # scikit-image ships these images; nothing is downloaded

    coffee = cv2.resize(data.coffee(), (320, 213))
    files = [("happiness/astronaut.jpg", _encode(data.astronaut(), ".jpg", rgb=True)),
             ("Surprised/no_face_coffee.jpg", _encode(coffee, ".jpg", rgb=True))]
    faces = data.lfw_subset()[:100]  # the first 100 are faces, the rest are not
    for i in (0, 1, 2, 3):  # all found by Haar and dlib HOG once upscaled and padded
        files.append((f"misc/lfw_{i:03d}.png", _encode(_padded_lfw(faces[i]), ".png")))
    return files


def _padded_lfw(face: np.ndarray) -> np.ndarray:
    """A 25x25 LFW crop, upscaled to 100x100 and padded to 200x200 with its edge grey."""
    face = cv2.resize((face * 255).round().astype(np.uint8), (100, 100), interpolation=cv2.INTER_CUBIC)
    edge = int(np.median(np.concatenate([face[0], face[-1], face[:, 0], face[:, -1]])))
    return cv2.copyMakeBorder(face, 50, 50, 50, 50, cv2.BORDER_CONSTANT, value=edge)


def _videos(seed: int, scale: int, pool) -> Files:
    """The sample videos (see fer_ray.sample_videos); a handful whatever the scale."""
    return sample_videos.sample_videos(seed)


def _baum2(seed: int, scale: int, pool) -> Files:
    """The BAUM-2-style archive (see fer_ray.sample_videos.baum2_archive)."""
    return sample_videos.baum2_archive(seed, scale, pool)


LAYOUTS: dict[str, Callable[[int, int, ThreadPoolExecutor], Files]] = {
    "fer2013": _fer2013, "affectnet": _affectnet, "jaffe": _jaffe,
    "ckplus": _ckplus, "mpi": _mpi, "folder": _folder, "videos": _videos, "baum2": _baum2,
}
