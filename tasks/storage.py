"""The one storage entry point: every URL radtrace reads or writes goes through this module.

Supported URLs: plain paths (``data/images``), ``file://`` URLs and ``s3://bucket/prefix``.
S3 goes through s3fs; the endpoint comes from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``
(unset: AWS itself), the region from ``AWS_REGION``/``AWS_DEFAULT_REGION`` and the credentials
only from ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (``AWS_SESSION_TOKEN`` optional).
Nothing else in radtrace builds S3 clients.

Importing this module registers an ``s3`` handler in ``webdataset.gopen``'s scheme table, so
``webdataset.WebDataset(["s3://..."])`` and ``webdataset.TarWriter("s3://...")`` work; an
upload through it completes when the stream is closed.
"""

from __future__ import annotations

import os
import posixpath
import socket
import tempfile
from typing import IO, Any, NamedTuple
from urllib.parse import urlsplit

import fsspec
from fsspec import AbstractFileSystem

__all__ = [
    "Entry",
    "check_destination",
    "check_source",
    "create_bucket",
    "exists",
    "filesystem",
    "find",
    "glob",
    "isdir",
    "join",
    "listdir",
    "open_url",
    "read_bytes",
    "register_webdataset_s3",
    "remove",
    "scheme",
    "write_bytes_atomic",
]

_SCHEMES = ("", "file", "s3")
_CREDENTIALS_HINT = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment"
_PROBE_TIMEOUT_S = 3.0


class Entry(NamedTuple):
    """One child of a folder: its URL, base name, whether it is a folder, and its size."""

    url: str
    name: str
    is_dir: bool
    size: int


def scheme(url: str) -> str:
    """The URL's scheme: ``""`` (plain path), ``"file"`` or ``"s3"``; others are refused."""
    parts = urlsplit(url)
    sch = parts.scheme.lower()
    if len(sch) == 1:  # a Windows drive letter, not a scheme
        sch = ""
    if sch not in _SCHEMES:
        raise ValueError(
            f"unsupported URL scheme {sch!r} in {url!r}: use a local path, file://... or s3://..."
        )
    if sch == "s3" and not parts.netloc:
        raise ValueError(f"{url!r} names no bucket: write it as s3://bucket/prefix")
    return sch


def _endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _s3_options(url: str) -> dict[str, Any]:
    key = os.environ.get("AWS_ACCESS_KEY_ID")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not key or not secret:
        raise PermissionError(f"no S3 credentials to reach {url}: {_CREDENTIALS_HINT}")
    opts: dict[str, Any] = {
        "key": key,
        "secret": secret,
        "token": os.environ.get("AWS_SESSION_TOKEN") or None,
        # Other workers write too: never answer a listing from a stale cache.
        "use_listings_cache": False,
    }
    if _endpoint():
        opts["endpoint_url"] = _endpoint()
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        opts["client_kwargs"] = {"region_name": region}
    return opts


def filesystem(url: str) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem for ``url`` and the path inside it (``bucket/key`` for S3)."""
    sch = scheme(url)
    if sch == "s3":
        return fsspec.core.url_to_fs(url, **_s3_options(url))
    return fsspec.core.url_to_fs(url)


def _to_url(like: str, path: str) -> str:
    """Turn a filesystem path back into a URL of the same kind as ``like``."""
    sch = scheme(like)
    if sch == "s3":
        return "s3://" + path
    if sch == "file":
        return "file://" + path
    return path


def join(url: str, *names: str) -> str:
    """``url`` with ``names`` appended as path components (``/``-separated for every kind)."""
    out = url
    for name in names:
        out = out.rstrip("/") + "/" + name.lstrip("/") if out else name
    return out


def open_url(url: str, mode: str = "rb") -> IO[bytes]:
    """Open ``url`` in a binary ``mode`` ("rb" or "wb"); writing creates local parent folders.

    An S3 write becomes visible when the stream is closed; a local write is not atomic (use
    :func:`write_bytes_atomic` for that).
    """
    if mode not in ("rb", "wb"):
        raise ValueError(f"mode must be 'rb' or 'wb', got {mode!r} for {url}")
    fs, path = filesystem(url)
    if mode == "wb" and scheme(url) != "s3":
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
    return fs.open(path, mode)


def exists(url: str) -> bool:
    """Whether a file or folder (an S3 object or prefix) exists at ``url``."""
    fs, path = filesystem(url)
    return bool(fs.exists(path))


def isdir(url: str) -> bool:
    """Whether ``url`` is a folder (for S3: a prefix with objects under it, or a bucket)."""
    fs, path = filesystem(url)
    return bool(fs.isdir(path))


def listdir(url: str) -> list[Entry]:
    """The direct children of the folder ``url``, sorted by name."""
    fs, path = filesystem(url)
    entries = []
    for info in fs.ls(path, detail=True):
        child = info["name"].rstrip("/")
        if child == path.rstrip("/"):  # some stores list a folder marker as its own child
            continue
        is_dir = info.get("type") == "directory"
        entries.append(
            Entry(
                _to_url(url, child), posixpath.basename(child), is_dir, int(info.get("size") or 0)
            )
        )
    return sorted(entries, key=lambda e: e.name)


def find(url: str) -> list[str]:
    """URLs of all files under the folder ``url`` (recursively), sorted."""
    fs, path = filesystem(url)
    return sorted(_to_url(url, p) for p in fs.find(path, withdirs=False))


def glob(pattern: str) -> list[str]:
    """URLs matching a glob ``pattern`` (``*``, ``?``, ``[...]``, ``**``), sorted."""
    fs, path = filesystem(pattern)
    return sorted(_to_url(pattern, p) for p in fs.glob(path))


def read_bytes(url: str) -> bytes:
    """The whole content of the file ``url``."""
    fs, path = filesystem(url)
    return bytes(fs.cat_file(path))


def remove(url: str) -> None:
    """Delete the file ``url``; a missing file is not an error."""
    fs, path = filesystem(url)
    if fs.exists(path):
        fs.rm_file(path)


def write_bytes_atomic(url: str, data: bytes) -> None:
    """Write ``data`` to ``url`` so that readers see the old file or the whole new one.

    Local: a temporary file in the same folder, fsync, then ``os.replace``. S3: one put (a single
    object write is atomic on S3; s3fs switches to a multipart upload above 2× its block size,
    which also appears only when complete).
    """
    fs, path = filesystem(url)
    if scheme(url) == "s3":
        fs.pipe_file(path, data)
        return
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        _fsync_dir(folder)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def create_bucket(url: str) -> None:
    """Create the bucket of ``s3://bucket/...`` if it does not exist.

    The region (``AWS_REGION``/``AWS_DEFAULT_REGION``) becomes the location constraint, except
    us-east-1, which S3 refuses as a constraint.
    """
    if scheme(url) != "s3":
        raise ValueError(f"create_bucket needs an s3:// URL, got {url!r}")
    fs, path = filesystem(url)
    bucket = path.split("/", 1)[0]
    if fs.exists(bucket):
        return
    params: dict[str, Any] = {"Bucket": bucket}
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region and region != "us-east-1":
        params["CreateBucketConfiguration"] = {"LocationConstraint": region}
    fs.call_s3("create_bucket", **params)
    fs.invalidate_cache()


def _fsync_dir(folder: str) -> None:
    """Make a rename in ``folder`` durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _probe_endpoint(url: str) -> None:
    """Fail fast, with the fix, when the configured S3 endpoint does not accept connections."""
    endpoint = _endpoint()
    if endpoint is None:
        return
    parts = urlsplit(endpoint)
    if not parts.hostname:
        raise ValueError(
            f"AWS_ENDPOINT_URL={endpoint!r} is not a URL: set it like http://127.0.0.1:9000"
        )
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=_PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        raise ConnectionError(
            f"cannot reach the S3 endpoint {endpoint} for {url} ({exc}): check AWS_ENDPOINT_URL "
            "and that the S3 server is running"
        ) from exc


def _check_s3(url: str, *, need_object: bool) -> None:
    fs, path = filesystem(url)  # raises the credentials error
    _probe_endpoint(url)
    bucket = path.split("/", 1)[0]
    where = _endpoint() or "AWS"
    try:
        bucket_ok = fs.exists(bucket)
        found = bucket_ok and (not need_object or fs.exists(path))
    except PermissionError as exc:
        raise PermissionError(
            f"S3 at {where} refused access to {url} ({exc}): check AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY and the bucket's permissions"
        ) from exc
    except OSError as exc:
        raise ConnectionError(
            f"S3 request for {url} failed at {where} ({exc!r}): check AWS_ENDPOINT_URL, "
            "AWS_DEFAULT_REGION and the credentials"
        ) from exc
    if not bucket_ok:
        raise FileNotFoundError(
            f"bucket {bucket!r} of {url} does not exist at {where}: create it or fix the URL"
        )
    if not found:
        raise FileNotFoundError(
            f"{url} does not exist in bucket {bucket!r} at {where}: fix the URL"
        )


def check_source(url: str) -> None:
    """Fail before any work, with one error that names ``url`` and what to fix.

    Raises ValueError (bad URL), FileNotFoundError (nothing at ``url``), PermissionError (no or
    refused S3 credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) or ConnectionError
    (the S3 endpoint does not answer: check AWS_ENDPOINT_URL).
    """
    if scheme(url) == "s3":
        _check_s3(url, need_object=True)
    elif not exists(url):
        raise FileNotFoundError(f"source {url} does not exist: fix the path or create it")


def check_destination(url: str) -> None:
    """Fail before any work when ``url`` cannot be written: S3 needs credentials, a reachable
    endpoint and an existing bucket; a local destination must not be an existing file."""
    if scheme(url) == "s3":
        _check_s3(url, need_object=False)
        return
    fs, path = filesystem(url)
    if fs.exists(path) and not fs.isdir(path):
        raise NotADirectoryError(f"destination {url} is a file: choose a folder")


def _gopen_s3(url: str, mode: str = "rb", bufsize: int = 8192, **kw: Any) -> IO[bytes]:
    """webdataset ``gopen`` handler for ``s3://``: an fsspec stream (uploads on close)."""
    del bufsize, kw  # fsspec buffers by itself
    return open_url(url, mode)


def register_webdataset_s3() -> None:
    """Register the ``s3`` scheme in ``webdataset.gopen.gopen_schemes`` (idempotent)."""
    from webdataset.gopen import gopen_schemes

    gopen_schemes["s3"] = _gopen_s3


register_webdataset_s3()
