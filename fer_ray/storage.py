"""URIs -> pyarrow filesystems. `s3://bucket/key`, `file:///path` or a plain local path.

S3 endpoint and credentials come only from the standard AWS environment variables
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
AWS_REGION / AWS_DEFAULT_REGION), so AWS, MinIO and a local test server all work and
no secret ever appears in a config, a log line or an output file.
"""
from __future__ import annotations

import functools
import os
import posixpath
from urllib.parse import urlparse

import pyarrow.fs as pafs


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def s3_filesystem() -> pafs.S3FileSystem:
    """An S3 filesystem configured from the environment (never from config)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return _s3_filesystem(endpoint, region, os.environ.get("AWS_ACCESS_KEY_ID"))


@functools.lru_cache(maxsize=8)
def _s3_filesystem(endpoint: str | None, region: str, _key_id: str | None) -> pafs.S3FileSystem:
    """Cached per endpoint/region/identity: building a client per file read is slow."""
    kwargs = {"region": region}
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
    return pafs.S3FileSystem(**kwargs)


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a URI."""
    if is_s3(uri):
        return s3_filesystem(), uri[len("s3://"):].rstrip("/")
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))


def absolute(uri: str) -> str:
    """s3:// URIs unchanged, local paths made absolute: Ray workers and Tune trials run in
    other working directories, where a relative path means something else."""
    if not uri or is_s3(uri):
        return uri
    return resolve(uri)[1]


def to_uri(fs: pafs.FileSystem, path: str) -> str:
    """The URI of a path inside a filesystem (inverse of `resolve`)."""
    return f"s3://{path}" if isinstance(fs, pafs.S3FileSystem) else path


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI with '/' (also for local paths)."""
    if is_s3(uri):
        return "s3://" + posixpath.join(uri[len("s3://"):].rstrip("/"), *parts)
    return os.path.join(uri, *parts)


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def read_bytes(uri: str) -> bytes:
    """The whole object; FileNotFoundError (on S3 too) when it does not exist."""
    fs, path = resolve(uri)
    try:
        with fs.open_input_stream(path) as stream:
            return stream.read()
    except FileNotFoundError:
        raise
    except OSError:
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            raise FileNotFoundError(uri) from None
        raise


def write_bytes(uri: str, data: bytes) -> None:
    fs, path = resolve(uri)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    with fs.open_output_stream(path) as stream:
        stream.write(data)


def list_files(uri: str, extensions: tuple[str, ...] = ()) -> list[str]:
    """All files under a directory URI (recursive, sorted), optionally filtered by extension.

    Only metadata is fetched; one listing call per prefix page, not per file.
    """
    fs, path = resolve(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    files = [i.path for i in infos if i.type == pafs.FileType.File]
    if extensions:
        files = [f for f in files if f.lower().endswith(tuple(e.lower() for e in extensions))]
    return sorted(to_uri(fs, f) for f in files)


def remove_dir(uri: str) -> None:
    """Delete a file, or a directory and everything under it; a missing one is fine."""
    fs, path = resolve(uri)
    kind = fs.get_file_info(path).type
    if kind == pafs.FileType.File:
        fs.delete_file(path)
    elif kind != pafs.FileType.NotFound:
        fs.delete_dir(path)


def check_readable(uri: str) -> str | None:
    """None if the URI can be read, else a one-line reason (used before any Ray work)."""
    fs, path = resolve(uri)
    try:
        info = fs.get_file_info(path)
    except OSError as err:  # denied bucket, bad endpoint, missing credentials
        return f"cannot access {uri}: {err}"
    if info.type == pafs.FileType.NotFound:
        return f"{uri} does not exist"
    return None
