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
    cached = cached_path(path_or_uri)
    if not os.path.isfile(cached):
        _stage(path_or_uri, cached, what)
    return cached


def cached_path(uri: str) -> str:
    """Where a URI is staged: <cache>/weights/<sha1 of uri>/<basename>.

    Hashing the whole URI keeps same-named files from different buckets apart.
    """
    digest = hashlib.sha1(uri.encode()).hexdigest()
    name = os.path.basename(uri.rstrip("/")) or "weights"
    return os.path.join(cache_root(), "weights", digest, name)


def _stage(uri: str, target: str, what: str) -> None:
    """Stream the object to a private temp file, then rename it into place.

    os.replace is atomic, so a worker never sees a half-written file, and two
    workers staging at once both end with a complete copy.
    """
    fs, path = storage.resolve(uri)
    if fs.get_file_info(path).type != pafs.FileType.File:
        raise FileNotFoundError(f"{what}: weight file {uri!r} does not exist")
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
