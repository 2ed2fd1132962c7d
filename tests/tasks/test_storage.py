import os
import socket

import pytest
import webdataset as wds

from tasks import storage


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_env(monkeypatch):
    """Credentials set, no endpoint override: the state a unit test starts from."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# --- URLs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("data/images", ""),
        ("/abs/path", ""),
        ("", ""),
        ("C:\\data\\images", ""),
        ("file:///tmp/x", "file"),
        ("FILE:///tmp/x", "file"),
        ("s3://bucket", "s3"),
        ("S3://bucket/prefix/key.tar", "s3"),
    ],
)
def test_scheme_accepts(url, expected):
    assert storage.scheme(url) == expected


@pytest.mark.parametrize("url", ["gs://bucket/x", "http://host/x", "https://h/x", "ftp://h/x"])
def test_scheme_refuses_others_naming_the_fix(url):
    with pytest.raises(ValueError, match="use a local path, file://... or s3://...") as info:
        storage.scheme(url)
    assert url in str(info.value)


def test_s3_url_without_bucket_is_refused():
    with pytest.raises(ValueError, match="names no bucket: write it as s3://bucket/prefix"):
        storage.scheme("s3:///key")


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("s3://b", "x", "y.tar"), "s3://b/x/y.tar"),
        (("s3://b/", "/x/"), "s3://b/x/"),
        (("data/", "a", "b"), "data/a/b"),
        (("", "a"), "a"),
        (("/", "a"), "/a"),
        (("file:///tmp", "a"), "file:///tmp/a"),
        (("s3://b/p",), "s3://b/p"),
    ],
)
def test_join(parts, expected):
    assert storage.join(*parts) == expected


# --- local files ------------------------------------------------------------------------------


def test_write_bytes_atomic_local_creates_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "deep" / "er" / "file.bin"
    storage.write_bytes_atomic(str(target), b"one")
    assert target.read_bytes() == b"one"
    storage.write_bytes_atomic(str(target), b"two, longer")
    assert target.read_bytes() == b"two, longer"
    assert os.listdir(target.parent) == ["file.bin"]
    assert target.stat().st_mode & 0o777 == 0o644


def test_write_bytes_atomic_file_url(tmp_path):
    url = "file://" + str(tmp_path / "x" / "y.bin")
    storage.write_bytes_atomic(url, b"data")
    assert (tmp_path / "x" / "y.bin").read_bytes() == b"data"
    assert storage.read_bytes(url) == b"data"


def test_write_bytes_atomic_failure_keeps_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        storage.write_bytes_atomic(str(target), b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["file.bin"]


def test_local_listing_find_glob_exists_remove(tmp_path):
    for rel in ["b/2.png", "b/sub/3.png", "a/1.png", "top.txt"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x" * len(rel))
    root = str(tmp_path)
    entries = storage.listdir(root)
    assert [(e.name, e.is_dir) for e in entries] == [("a", True), ("b", True), ("top.txt", False)]
    assert entries[2] == storage.Entry(f"{root}/top.txt", "top.txt", False, 7)
    assert storage.find(f"{root}/b") == [f"{root}/b/2.png", f"{root}/b/sub/3.png"]
    assert storage.glob(f"{root}/**/*.png") == [
        f"{root}/a/1.png",
        f"{root}/b/2.png",
        f"{root}/b/sub/3.png",
    ]
    assert storage.exists(f"{root}/a") and storage.isdir(f"{root}/a")
    assert storage.exists(f"{root}/top.txt") and not storage.isdir(f"{root}/top.txt")
    storage.remove(f"{root}/top.txt")
    storage.remove(f"{root}/top.txt")  # missing: not an error
    assert not storage.exists(f"{root}/top.txt")


def test_file_urls_list_as_file_urls(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x.png").write_bytes(b"1")
    url = "file://" + str(tmp_path)
    assert [e.url for e in storage.listdir(url)] == [url + "/c"]
    assert storage.find(url) == [url + "/c/x.png"]
    assert storage.glob(url + "/*/*.png") == [url + "/c/x.png"]


def test_open_url_local(tmp_path):
    url = str(tmp_path / "new" / "dir" / "f.bin")
    with storage.open_url(url, "wb") as f:
        f.write(b"abc")
    with storage.open_url(url) as f:
        assert f.read() == b"abc"
    with pytest.raises(ValueError, match="mode must be 'rb' or 'wb'"):
        storage.open_url(url, "r")


def test_check_source_missing_local_path(tmp_path):
    missing = str(tmp_path / "nothing" / "here")
    with pytest.raises(FileNotFoundError) as info:
        storage.check_source(missing)
    assert missing in str(info.value)
    storage.check_source(str(tmp_path))  # exists: no error


def test_check_destination_local(tmp_path):
    storage.check_destination(str(tmp_path / "new"))
    storage.check_destination(str(tmp_path))
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="is a file"):
        storage.check_destination(str(tmp_path / "f"))


# --- S3 errors, without a server --------------------------------------------------------------


def test_s3_without_credentials_is_refused_naming_the_variables(s3_env):
    s3_env.delenv("AWS_ACCESS_KEY_ID")
    s3_env.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    for call in (storage.check_source, storage.check_destination, storage.filesystem):
        with pytest.raises(PermissionError, match="AWS_ACCESS_KEY_ID") as info:
            call("s3://bucket/data")
        assert "s3://bucket/data" in str(info.value)


def test_s3_with_half_the_credentials_is_refused(s3_env):
    s3_env.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(PermissionError, match="AWS_SECRET_ACCESS_KEY"):
        storage.check_source("s3://bucket/data")


def test_unreachable_endpoint_is_a_connection_error_naming_the_variable(s3_env):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    s3_env.setenv("AWS_ENDPOINT_URL", endpoint)
    for call in (storage.check_source, storage.check_destination):
        with pytest.raises(ConnectionError, match="AWS_ENDPOINT_URL") as info:
            call("s3://bucket/data")
        assert endpoint in str(info.value)


def test_s3_specific_endpoint_variable_wins(s3_env):
    s3_env.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    s3_env.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    with pytest.raises(ConnectionError) as info:
        storage.check_source("s3://bucket/data")
    assert endpoint in str(info.value)


def test_endpoint_that_is_not_a_url(s3_env):
    s3_env.setenv("AWS_ENDPOINT_URL", "localhost9000")
    with pytest.raises(ValueError, match="is not a URL: set it like http://"):
        storage.check_source("s3://bucket/data")


# --- S3 against a real local endpoint ---------------------------------------------------------


@pytest.mark.integration
def test_s3_round_trip(s3_bucket):
    root = storage.join(s3_bucket, "data")
    files = {"b/2.png": b"22", "b/sub/3.png": b"333", "a/1.png": b"1", "top.txt": b"top!"}
    for rel, data in files.items():
        storage.write_bytes_atomic(storage.join(root, rel), data)
    for rel, data in files.items():
        assert storage.read_bytes(storage.join(root, rel)) == data
    entries = storage.listdir(root)
    assert [(e.name, e.is_dir) for e in entries] == [("a", True), ("b", True), ("top.txt", False)]
    assert entries[0].url == f"{root}/a"
    assert entries[2] == storage.Entry(f"{root}/top.txt", "top.txt", False, 4)
    assert storage.find(storage.join(root, "b")) == [f"{root}/b/2.png", f"{root}/b/sub/3.png"]
    assert storage.find(s3_bucket) == sorted(f"{root}/{rel}" for rel in files)
    assert storage.glob(f"{root}/*/*.png") == [f"{root}/a/1.png", f"{root}/b/2.png"]
    assert storage.glob(f"{root}/**/*.png") == [
        f"{root}/a/1.png",
        f"{root}/b/2.png",
        f"{root}/b/sub/3.png",
    ]
    assert storage.exists(root) and storage.isdir(root) and storage.isdir(s3_bucket)
    assert storage.exists(f"{root}/top.txt") and not storage.isdir(f"{root}/top.txt")
    assert not storage.exists(f"{root}/nope")
    storage.check_source(f"{root}/top.txt")
    storage.check_source(root)  # a prefix counts
    storage.check_destination(storage.join(s3_bucket, "new-prefix"))
    storage.remove(f"{root}/top.txt")
    storage.remove(f"{root}/top.txt")
    assert [e.name for e in storage.listdir(root)] == ["a", "b"]


@pytest.mark.integration
def test_s3_overwrite_and_listing_is_never_stale(s3_bucket):
    url = storage.join(s3_bucket, "p", "f.bin")
    storage.write_bytes_atomic(url, b"one")
    assert [e.name for e in storage.listdir(storage.join(s3_bucket, "p"))] == ["f.bin"]
    storage.write_bytes_atomic(url, b"two!")
    storage.write_bytes_atomic(storage.join(s3_bucket, "p", "g.bin"), b"g")
    assert storage.read_bytes(url) == b"two!"
    listed = storage.listdir(storage.join(s3_bucket, "p"))
    assert [(e.name, e.size) for e in listed] == [("f.bin", 4), ("g.bin", 1)]


@pytest.mark.integration
def test_s3_open_url_write_visible_after_close(s3_bucket):
    url = storage.join(s3_bucket, "streamed.bin")
    with storage.open_url(url, "wb") as f:
        f.write(b"x" * 1000)
    with storage.open_url(url, "rb") as f:
        assert f.read() == b"x" * 1000


@pytest.mark.integration
def test_s3_missing_bucket_and_object(s3_endpoint):
    with pytest.raises(FileNotFoundError, match="bucket 'no-such-bucket-x1'") as info:
        storage.check_source("s3://no-such-bucket-x1/data")
    assert "create it or fix the URL" in str(info.value)
    with pytest.raises(FileNotFoundError, match="bucket 'no-such-bucket-x1'"):
        storage.check_destination("s3://no-such-bucket-x1/out")


@pytest.mark.integration
def test_s3_missing_object_in_existing_bucket(s3_bucket):
    url = storage.join(s3_bucket, "missing", "x.tar")
    with pytest.raises(FileNotFoundError, match="does not exist in bucket") as info:
        storage.check_source(url)
    assert url in str(info.value)
    storage.check_destination(url)  # a destination may be new


@pytest.mark.integration
def test_webdataset_tarwriter_and_reader_over_s3(s3_bucket):
    url = storage.join(s3_bucket, "shards", "x.tar")
    samples = [
        {"__key__": f"s{i}", "png": bytes([i]) * (100 + i), "cls": str(i).encode()}
        for i in range(5)
    ]
    with wds.TarWriter(url, encoder=False) as writer:
        for s in samples:
            writer.write(s)
    assert storage.exists(url)
    got = list(wds.WebDataset([url], shardshuffle=False))
    assert [g.pop("__url__") for g in got] == [url] * 5
    assert got == samples
