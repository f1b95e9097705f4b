"""Model weight files: local paths as they are, URIs staged once per node.

Native loaders (dlib, OpenCV's ONNX reader) need a real file path, so a weight
file that lives in object storage is copied once into a per-node cache and reused
by every worker on that node afterwards.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import uuid

import pyarrow.fs as pafs

from fer_ray import storage

DLIB_68_MODEL = "shape_predictor_68_face_landmarks.dat"
_FAN_SITE = "https://www.adrianbulat.com/downloads/python-fan/"
_BLAZEFACE_SITE = "https://github.com/hollance/BlazeFace-PyTorch/blob/master/"
# face-alignment's networks: (file name in its cache, where it would download it from, config field)
NETWORK_WEIGHTS = {
    "fan": ("2DFAN4-11f355bf06.pth.tar", _FAN_SITE + "2DFAN4-11f355bf06.pth.tar", "face.landmark_model"),
    "fan3d": ("3DFAN4-7835d9f11d.pth.tar", _FAN_SITE + "3DFAN4-7835d9f11d.pth.tar", "face.landmark_model"),
    "sfd": ("s3fd-619a316812.pth", _FAN_SITE + "s3fd-619a316812.pth", "face.detector_model"),
    "blazeface": ("blazeface.pth", _BLAZEFACE_SITE + "blazeface.pth?raw=true", "face.detector_model"),
}
_COPY_CHUNK = 8 << 20


def cache_root() -> str:
    """$FER_RAY_CACHE, else ~/.cache/fer-ray (weights go under <root>/weights)."""
    return os.path.expanduser(os.environ.get("FER_RAY_CACHE") or "~/.cache/fer-ray")


def local_weights(path_or_uri: str, what: str = "weights") -> str:
    """A local file path for a weight file given as a path or a URI.

    A plain path is returned as is (FileNotFoundError if missing). A URI (s3://,
    file://) is copied into the cache on first use and the cached copy returned
    after that. `what` names the config field, for the error message.
    """
    if "://" not in path_or_uri:
        path = os.path.expanduser(path_or_uri)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{what}: weight file {path_or_uri!r} does not exist")
        return path
    fs, path = storage.resolve(path_or_uri)
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        raise FileNotFoundError(f"{what}: weight file {path_or_uri!r} does not exist")
    cached = cached_path(path_or_uri, f"{info.size}|{info.mtime_ns}")
    if not os.path.isfile(cached):
        _stage(fs, path, cached)
    return cached


def cached_path(uri: str, version: str = "") -> str:
    """Where a URI is staged: <cache>/weights/<sha1 of uri and version>/<basename>.

    Hashing the whole URI keeps same-named files from different buckets apart; the
    version (size and modification time) makes a replaced object staged afresh.
    """
    digest = hashlib.sha1(f"{uri}|{version}".encode()).hexdigest()
    name = os.path.basename(uri.rstrip("/")) or "weights"
    return os.path.join(cache_root(), "weights", digest, name)


def _stage(fs, path: str, target: str) -> None:
    """Stream the object to a private temp file, then rename it into place.

    os.replace is atomic, so a worker never sees a half-written file, and two
    workers staging at once both end with a complete copy.
    """
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = f"{target}.tmp-{os.getpid()}-{uuid.uuid4().hex}"
    try:
        with fs.open_input_stream(path) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, _COPY_CHUNK)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def dlib_predictor_path() -> str:
    """dlib's 68-point model shipped in the face-recognition-models package.

    Found with find_spec, not imported: the package's __init__ imports
    pkg_resources, which recent setuptools no longer provides.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("face.landmark_model: not set and the face-recognition-models "
                                "package is not installed")
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", DLIB_68_MODEL)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"face.landmark_model: not set and {path} is missing")
    return path


def network_weights(name: str, model_path: str = "") -> str:
    """Local path of a face-alignment network's weights: the configured path or URI (a URI
    is staged once per node), else face-alignment's own cache (torch hub's checkpoints
    folder, where its downloads land); otherwise an error naming the file and the ways
    to provide it."""
    filename, _, field = NETWORK_WEIGHTS[name]
    if model_path:
        return local_weights(model_path, what=field)
    problem = network_weights_problem(name)
    if problem:
        raise FileNotFoundError(problem)
    return face_alignment_cache(filename)


def network_weights_problem(name: str, model_path: str = "") -> str | None:
    """None if the weights can be found, else why not (checked before any Ray work)."""
    filename, url, field = NETWORK_WEIGHTS[name]
    if model_path:
        return unreadable(field, model_path)
    cached = face_alignment_cache(filename)
    if os.path.isfile(cached):
        return None
    return (f"{field}: not set and {filename} is not in face-alignment's cache ({cached}). Nothing "
            f"is downloaded at run time: fetch {url} on a machine with internet, then set {field} "
            f"to its path or an s3:// URI, or copy it to {cached}")


def weights_problem(name: str, field: str, path_or_uri: str) -> str | None:
    """None if model `name`'s weights can be read, else why not: face-alignment's networks
    may also come from their own cache; any other model needs its file at `path_or_uri`."""
    return network_weights_problem(name, path_or_uri) if name in NETWORK_WEIGHTS \
        else unreadable(field, path_or_uri)


def unreadable(field: str, path_or_uri: str) -> str | None:
    """None if the configured file can be read, else `field: why`."""
    problem = storage.check_readable(path_or_uri)
    return problem and f"{field}: {problem}"


def face_alignment_cache(filename: str) -> str:
    import torch.hub

    return os.path.join(torch.hub.get_dir(), "checkpoints", filename)
