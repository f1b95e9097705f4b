"""URIs -> pyarrow filesystems. `s3://bucket/key`, `file:///path` or a plain local path.

S3 endpoint and credentials come only from the standard AWS environment variables
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
AWS_REGION / AWS_DEFAULT_REGION), so AWS, MinIO and a local test server all work and
no secret ever appears in a config, a log line or an output file.

Storage calls retry transient errors (a dropped connection, a 503, throttling) with a
bounded backoff (`retrying`); errors about the object itself (missing, denied) are not
retried. When storage stays unreachable past the budget, `StorageUnavailable` stops the
run: it is no one input's fault, so it must never become an input's status.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import posixpath
import random
import shutil
import stat
import time
import typing
import uuid
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol, TypeVar
from urllib.parse import urlparse

import pyarrow.fs as pafs

from fer_ray import s3_listing
from fer_ray.schema import Status

log = logging.getLogger(__name__)
T = TypeVar("T")


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def _s3_settings() -> tuple[str | None, str, str | None]:
    """(endpoint, region, access key id) from the environment (never from config)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return endpoint, region, os.environ.get("AWS_ACCESS_KEY_ID")


def s3_filesystem() -> pafs.S3FileSystem:
    """An S3 filesystem configured from the environment (never from config)."""
    return _s3_filesystem(*_s3_settings())


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


def relative(uri: str, root: str) -> str:
    """`uri` as a path relative to `root` (both URIs of the same store)."""
    return posixpath.relpath(resolve(uri)[1], resolve(root)[1])


# ---------------------------------------------------------------- retries

class StorageUnavailable(RuntimeError):
    """Storage kept failing with transient errors after every retry. Deliberately not an
    OSError: handlers that turn an input's OSError into its `read_error` must not catch it."""


# Substrings of transient errors in pyarrow's S3 messages (and Ray Data's own list).
TRANSIENT_MARKERS = (
    "AWS Error NETWORK_CONNECTION", "AWS Error SLOW_DOWN", "AWS Error SERVICE_UNAVAILABLE",
    "AWS Error INTERNAL_FAILURE", "AWS Error REQUEST_TIMEOUT", "AWS Error THROTTLING",
    "HTTP status 5", "curlCode", "Connection reset", "Broken pipe", "timed out",
)


def is_transient(err: BaseException) -> bool:
    """Whether an error says the store is (briefly) unreachable rather than something about
    the object: missing, denied and not-a-file errors are final at once."""
    if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    if isinstance(err, (ConnectionError, TimeoutError)):
        return True
    return isinstance(err, OSError) and any(marker in str(err) for marker in TRANSIENT_MARKERS)


# The default retry budget (config.RetryConfig's defaults): waits of 0.5, 1, 2, 4, 8, 10,
# 10 s between 8 tries, about 35 s in all, which a restarting endpoint or a throttled
# burst outlasts rarely.
ATTEMPTS, BACKOFF_S, MAX_BACKOFF_S = 8, 0.5, 10.0


class RetryPolicy(Protocol):
    """What retrying reads of a retry configuration (config.RetryConfig is one)."""
    storage_attempts: int
    storage_backoff_s: float
    storage_max_backoff_s: float


def retrying(what: str, call: Callable[[], T], retry: RetryPolicy | None = None) -> T:
    """call(), retried on transient storage errors with exponential backoff and jitter.

    Non-transient errors propagate at once. A transient error that outlasts the budget
    becomes StorageUnavailable naming `what`, the attempts and the last error.
    """
    attempts, backoff, longest = ((retry.storage_attempts, retry.storage_backoff_s, retry.storage_max_backoff_s)
                                  if retry else (ATTEMPTS, BACKOFF_S, MAX_BACKOFF_S))
    started = time.monotonic()
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except OSError as err:
            if not is_transient(err):
                raise
            if attempt == attempts:
                raise StorageUnavailable(
                    f"{what}: storage still unreachable after {attempt} attempts over "
                    f"{time.monotonic() - started:.0f} s ({first_line(err)}); the run can be resumed "
                    f"by running it again") from err
            wait = min(backoff * 2 ** (attempt - 1), longest) * random.uniform(0.8, 1.2)
            log.warning("%s: transient storage error (attempt %d of %d), retrying in %.1f s: %s",
                        what, attempt, attempts, wait, first_line(err))
            time.sleep(wait)
    raise AssertionError("unreachable")


def first_line(err: BaseException, limit: int = 300) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:limit]


# ---------------------------------------------------------------- reading and writing

def file_type(uri: str, retry: RetryPolicy | None = None) -> pafs.FileType:
    """What the URI names: a file (an object), a directory (a prefix), or nothing (NotFound)."""
    fs, path = resolve(uri)
    return retrying(f"look up {uri}", lambda: fs.get_file_info(path), retry).type


def exists(uri: str, retry: RetryPolicy | None = None) -> bool:
    return file_type(uri, retry) != pafs.FileType.NotFound


def is_file(uri: str, retry: RetryPolicy | None = None) -> bool:
    return file_type(uri, retry) == pafs.FileType.File


def read_bytes(uri: str, retry: RetryPolicy | None = None) -> bytes:
    """The whole object; FileNotFoundError (on S3 too) when it does not exist."""
    fs, path = resolve(uri)
    return retrying(f"read {uri}", lambda: _read_once(fs, path, uri), retry)


def _read_once(fs: pafs.FileSystem, path: str, uri: str) -> bytes:
    try:
        with fs.open_input_stream(path) as stream:
            return stream.read()
    except FileNotFoundError:
        raise
    except OSError:
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            raise FileNotFoundError(uri) from None
        raise


def read_chunks(uri: str, chunk: int = 1 << 20, retry: RetryPolicy | None = None) -> Iterator[bytes]:
    """The object's bytes in chunks, streamed; a transient error reopens the object and
    continues at the same offset, so a long read survives a short outage."""
    fs, path = resolve(uri)
    offset, source = 0, None
    while True:
        def next_chunk(start: int = offset) -> bytes:
            nonlocal source
            try:
                if source is None:
                    source = fs.open_input_file(path)
                    source.seek(start)
                return source.read(chunk)
            except OSError:
                source = None  # reopen on the next attempt
                raise

        data = retrying(f"read {uri} at byte {offset}", next_chunk, retry)
        if not data:
            return
        offset += len(data)
        yield data


def write_bytes(uri: str, data: bytes, retry: RetryPolicy | None = None) -> None:
    """Write an object whole: readers see the old content or the new, never a part.

    An S3 object appears only when its upload completes; a local file is written beside
    its target and renamed over it.
    """
    fs, path = resolve(uri)
    retrying(f"write {uri}", lambda: _write_once(fs, path, lambda out: out.write(data)), retry)


def upload_file(local_path: str, uri: str, retry: RetryPolicy | None = None) -> None:
    """Copy a local file to `uri` in 1 MiB chunks (never whole in memory), visible whole as
    with write_bytes."""
    fs, path = resolve(uri)

    def copy(out) -> None:
        with open(local_path, "rb") as source:
            shutil.copyfileobj(source, out, 1 << 20)

    retrying(f"write {uri}", lambda: _write_once(fs, path, copy), retry)


def copy_file(source_uri: str, uri: str, retry: RetryPolicy | None = None) -> None:
    """Copy an object to `uri` in 1 MiB chunks (never whole in memory), visible whole as with
    write_bytes."""
    fs, path = resolve(uri)

    def copy(out) -> None:
        for data in read_chunks(source_uri, retry=retry):
            out.write(data)

    retrying(f"write {uri}", lambda: _write_once(fs, path, copy), retry)


def _write_once(fs: pafs.FileSystem, path: str, write: Callable[[typing.BinaryIO], object]) -> None:
    fs.create_dir(posixpath.dirname(path), recursive=True)
    if isinstance(fs, pafs.S3FileSystem):
        with fs.open_output_stream(path) as stream:
            write(stream)
        return
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def replace_file(source_uri: str, target_uri: str, retry: RetryPolicy | None = None) -> None:
    """Move a finished file over its target in one step (a rename locally; on S3 a copy,
    which makes the new object visible whole, then the source is deleted)."""
    fs, source = resolve(source_uri)
    target = resolve(target_uri)[1]
    retrying(f"move {source_uri} to {target_uri}", lambda: fs.move(source, target), retry)


def list_files(uri: str, extensions: tuple[str, ...] = (), retry: RetryPolicy | None = None) -> list[str]:
    """The plain files under a directory URI (recursive, sorted), optionally by extension."""
    files = [entry.uri for entry in list_tree(uri, retry) if not entry.problem]
    if extensions:
        files = [f for f in files if f.lower().endswith(tuple(e.lower() for e in extensions))]
    return files


def list_dirs(uri: str, retry: RetryPolicy | None = None) -> list[str]:
    """Names of the directories directly under a URI (none if it does not exist)."""
    fs, path = resolve(uri)
    selector = pafs.FileSelector(path, recursive=False, allow_not_found=True)
    infos = retrying(f"list {uri}", lambda: fs.get_file_info(selector), retry)
    return sorted(posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.Directory)


def remove_dir(uri: str, retry: RetryPolicy | None = None) -> None:
    """Delete a file, or a directory and everything under it; a missing one is fine."""
    fs, path = resolve(uri)

    def remove() -> None:
        kind = fs.get_file_info(path).type
        if kind == pafs.FileType.File:
            fs.delete_file(path)
        elif kind != pafs.FileType.NotFound:
            fs.delete_dir(path)

    retrying(f"remove {uri}", remove, retry)


def remove_file(uri: str, retry: RetryPolicy | None = None) -> None:
    """Delete one file; a missing one is fine. On S3 a DeleteObject alone: pyarrow's delete
    leaves empty 'folder/' marker objects behind for the parents, so the output of a run that
    staged nothing would seem to exist."""
    if not is_s3(uri):
        def remove_local() -> None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(resolve(uri)[1])
        return retrying(f"remove {uri}", remove_local, retry)
    bucket, _, key = uri[len("s3://"):].partition("/")  # not resolve(): a marker key ends in "/"
    client = _s3_client(*_s3_settings())
    retrying(f"remove {uri}", lambda: _s3_request(client.delete_object, {"Bucket": bucket, "Key": key}), retry)


def remove_if_empty(uri: str, retry: RetryPolicy | None = None) -> None:
    """Remove a local directory if it is empty; on S3, the directory's marker object (pyarrow
    writes one for each parent of a file it writes), which leaves any objects under it be."""
    if is_s3(uri):
        remove_file(uri.rstrip("/") + "/", retry)
        return
    with contextlib.suppress(OSError):  # not empty, or gone
        os.rmdir(resolve(uri)[1])


# ---------------------------------------------------------------- listing inputs

@dataclass(frozen=True, slots=True)
class Listed:
    """One name found under an input directory. `problem` is '' for a readable file, else
    the manifest status that accounts for it (the name is listed, but not read).
    Slotted: a listing of a million names holds a million of these."""
    uri: str
    size: int = 0
    mtime_ns: int = 0
    problem: str = ""
    error: str = ""


# An object store lists one sub-prefix or key range per request stream, a page of 1000 keys
# per round trip; prefixes and ranges are listed side by side on this many threads.
LIST_THREADS = 16
# How many directory levels are listed one at a time, at most, to find sub-prefixes to list
# in parallel: enough for `<split>/<class>/<image>` layouts, few requests for flat ones.
SPLIT_LEVELS = 3


def list_tree(uri: str, retry: RetryPolicy | None = None) -> list[Listed]:
    """Every name under a directory URI, each exactly once, sorted by URI.

    Local trees are walked without following links to directories (a link can neither
    loop nor count a file twice); such a link, a dangling link, a name that is not UTF-8
    and anything that is not a regular file are listed with their problem, so the job
    can account for them. Object stores have none of these; their prefixes are listed in
    parallel (`list_objects`).
    """
    fs, path = resolve(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        found = list(_walk_local(os.fsencode(path)))
    else:
        found = list_objects(fs, path, retry)
    found.sort(key=lambda entry: entry.uri)
    return found


def list_objects(fs: pafs.FileSystem, path: str, retry: RetryPolicy | None = None) -> list[Listed]:
    """The files under a prefix of an object store, listed on LIST_THREADS threads.

    One recursive listing of a large prefix is a single sequential chain of pages. Instead,
    the first levels are listed one level at a time (every directory of a level side by
    side) until there are at least LIST_THREADS sub-prefixes or SPLIT_LEVELS levels are
    done; then the sub-prefixes are listed recursively side by side. A large level or
    sub-prefix (a flat one has all its keys on one level) is cut into key ranges listed side
    by side (`s3_listing`). Every request retries on its own. A missing top prefix is
    FileNotFoundError, as with a sequential listing.
    """
    bucket, _, key = path.partition("/")
    lister = s3_listing.RangedLister(_s3_page_function(retry), bucket, LIST_THREADS,
                                     entry=lambda name, size, mtime: Listed(f"s3://{bucket}/{name}", size, mtime))
    top = f"{key}/" if key else ""
    files, prefixes, listings = [], [top], []
    for level in range(SPLIT_LEVELS):
        if not prefixes or (level and len(prefixes) >= LIST_THREADS):
            break
        listings.append(lister.list(prefixes, delimiter="/"))
        if not level and key and top not in listings[0].found:
            raise FileNotFoundError(f"{to_uri(fs, path)}: no such prefix")
        files.extend(listings[-1].objects)
        prefixes = sorted(listings[-1].prefixes)
    if prefixes:
        listings.append(lister.list(prefixes))
        files.extend(listings[-1].objects)
    log.debug("listed %s: %d files in %d pages over %d key ranges, at most %d requests pending at once",
              to_uri(fs, path), len(files), sum(x.pages for x in listings), sum(x.ranges for x in listings),
              max(x.peak_in_flight for x in listings))
    return files


@functools.lru_cache(maxsize=8)
def _s3_client(endpoint: str | None, region: str, _key_id: str | None):
    """A boto3 S3 client for listings (pyarrow lists whole directories only, no key ranges):
    credentials from the environment as for pyarrow, its own retries off (`retrying` retries),
    a connection per listing thread. Thread-safe; cached like the filesystem."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"total_max_attempts": 1}, max_pool_connections=LIST_THREADS,
                    connect_timeout=10, read_timeout=60)
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=region, config=config)


def _s3_page_function(retry: RetryPolicy | None) -> s3_listing.ListPage:
    """One ListObjectsV2 request, retried like every storage call (botocore's errors as the
    OSErrors `retrying` and the callers know)."""
    client = _s3_client(*_s3_settings())

    def list_page(request: dict) -> dict:
        return retrying(f"list s3://{request['Bucket']}/{request['Prefix']}",
                        lambda: _s3_request(client.list_objects_v2, request), retry)

    return list_page


def _s3_request(call: Callable[..., T], request: dict) -> T:
    from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as EndpointUnreachable

    try:
        return call(**request)
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        message = f"{code}: HTTP status {status}: {err}"
        if code == "NoSuchBucket" or status == 404:
            raise FileNotFoundError(message) from err
        if status in (401, 403):
            raise PermissionError(message) from err
        raise OSError(message) from err  # transient when 5xx (TRANSIENT_MARKERS)
    except (EndpointUnreachable, HTTPClientError) as err:  # refused, reset, timed out
        raise ConnectionError(str(err)) from err
    except BotoCoreError as err:  # no credentials, a malformed endpoint: final
        raise PermissionError(str(err)) from err


def _walk_local(directory: bytes) -> Iterator[Listed]:
    with os.scandir(directory) as entries:
        for entry in entries:
            name = _decoded(entry.path)
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError as err:  # vanished or unreadable while listing
                yield Listed(name, problem=Status.NOT_A_FILE, error=f"cannot read its metadata: {err.strerror}")
                continue
            if stat.S_ISLNK(info.st_mode):
                yield _link(entry.path, name)
            elif stat.S_ISDIR(info.st_mode):
                yield from _walk_local(entry.path)
            else:
                yield _file(entry.path, name, info)


def _link(path: bytes, name: str) -> Listed:
    try:
        target = os.stat(path)
    except OSError:
        return Listed(name, problem=Status.DANGLING_LINK,
                      error=f"link to {_decoded(os.readlink(path))!r}, which does not exist")
    if stat.S_ISDIR(target.st_mode):
        return Listed(name, problem=Status.NOT_FOLLOWED, error="link to a directory; links to directories are "
                                                        "not followed (give its target as an input of its own)")
    return _file(path, name, target)  # a link to a file is read like the file


def _file(path: bytes, name: str, info: os.stat_result) -> Listed:
    if not stat.S_ISREG(info.st_mode):
        return Listed(name, problem=Status.NOT_A_FILE, error="not a regular file (a pipe, socket or device)")
    if not _is_utf8(path):
        return Listed(name, info.st_size, info.st_mtime_ns, Status.BAD_NAME,
                      "file name is not valid UTF-8 (shown with \\x escapes); rename it to include it")
    return Listed(name, info.st_size, info.st_mtime_ns)


def _is_utf8(path: bytes) -> bool:
    try:
        path.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _decoded(path: bytes) -> str:
    """A path as text; bytes that are not UTF-8 become visible \\xNN escapes."""
    return path.decode("utf-8", "backslashreplace")


def fingerprint(entries: typing.Iterable[Listed]) -> str:
    """A short hash of what was listed (names, sizes, modification times): the same
    input gives the same fingerprint, a changed one another."""
    digest = hashlib.sha1()
    add_to_fingerprint(digest, entries)
    return digest.hexdigest()[:16]


def add_to_fingerprint(digest, entries: typing.Iterable[Listed]) -> None:
    """Feed listed names to a running fingerprint (`fingerprint` of all of them, in order)."""
    for entry in entries:
        digest.update(f"{entry.uri}\0{entry.size}\0{entry.mtime_ns}\0{entry.problem}\n".encode())


def file_fingerprint(uri: str, retry: RetryPolicy | None = None) -> str:
    """fingerprint() of a single object."""
    fs, path = resolve(uri)
    info = retrying(f"look up {uri}", lambda: fs.get_file_info(path), retry)
    return fingerprint([Listed(uri, info.size or 0, info.mtime_ns or 0)])


# ---------------------------------------------------------------- checks before any work

def check_readable(uri: str, retry: RetryPolicy | None = None) -> str | None:
    """None if the URI can be read, else a one-line reason (used before any Ray work)."""
    fs, path = resolve(uri)
    try:
        info = retrying(f"look up {uri}", lambda: fs.get_file_info(path), retry)
    except (OSError, StorageUnavailable) as err:  # denied bucket, bad endpoint, missing credentials
        return f"cannot access {uri}: {first_line(err)}"
    if info.type == pafs.FileType.NotFound:
        return f"{uri} does not exist"
    return None


def check_writable(uri: str, retry: RetryPolicy | None = None) -> str | None:
    """None if an output can be written under the URI, else a one-line reason. Nothing is
    left behind: locally the nearest existing directory is checked; on S3 the bucket must
    exist and a tiny probe object is written and deleted again."""
    fs, path = resolve(uri)
    try:
        if isinstance(fs, pafs.LocalFileSystem):
            return _local_writable(path)
        return _s3_writable(fs, path, uri, retry)
    except (OSError, StorageUnavailable) as err:
        return f"cannot write to {uri}: {first_line(err)}"


def _local_writable(path: str) -> str | None:
    if os.path.exists(path) and not os.path.isdir(path):
        return f"{path} is a file, not a directory"
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"cannot create {path}: {existing} is a file"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot write to {path}: {existing} is not writable"
    return None


def _s3_writable(fs: pafs.S3FileSystem, path: str, uri: str, retry: RetryPolicy | None) -> str | None:
    bucket = path.split("/", 1)[0]
    if retrying(f"look up bucket {bucket}", lambda: fs.get_file_info(bucket), retry).type == pafs.FileType.NotFound:
        return f"bucket {bucket!r} of {uri} does not exist (or these credentials cannot see it)"
    probe = f"{path}/.fer-ray-write-check-{uuid.uuid4().hex}"
    retrying(f"write {to_uri(fs, probe)}", lambda: _write_once(fs, probe, lambda stream: stream.write(b"")), retry)
    retrying(f"remove {to_uri(fs, probe)}", lambda: fs.delete_file(probe), retry)
    return None


def overlaps(a: str, b: str) -> bool:
    """Whether one URI is, or lies inside, the other (local paths compared absolute)."""
    first, second = (_comparable(uri) for uri in (a, b))
    return first == second or first.startswith(second + "/") or second.startswith(first + "/")


def _comparable(uri: str) -> str:
    if is_s3(uri):
        return uri.rstrip("/")
    return os.path.realpath(resolve(uri)[1]).rstrip("/")
