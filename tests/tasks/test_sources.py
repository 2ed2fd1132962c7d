import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from radcore.datasets import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR
from tasks import storage
from tasks.sources import (
    Rejected,
    make_sample,
    open_idx,
    open_image_folder,
    open_webdataset,
    tar_urls,
)
from tests.tasks.helpers import (
    FOLDER_CLASSES,
    idx_bytes,
    image_bytes,
    make_image_folder,
    upload_tree,
    write_bad_files,
)


def _decode(png: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(png))
    im.load()
    return im


def _split(items):
    items = list(items)
    samples = [i for i in items if isinstance(i, dict)]
    rejected = [i for i in items if isinstance(i, Rejected)]
    assert len(samples) + len(rejected) == len(items)
    return samples, rejected


def _check_folder_samples(samples, written, root_url):
    """Samples match what make_image_folder wrote: order, keys, cls, pixels, json."""
    expected = sorted(written.values(), key=lambda w: (w.cls, w.relpath))
    assert [s["__key__"] for s in samples] == [w.key for w in expected]
    for s, w in zip(samples, expected, strict=True):
        assert set(s) == {"__key__", "png", "cls", "json"}
        assert s["cls"] == str(w.cls)
        im = _decode(s["png"])
        assert (im.mode, im.size) == (w.expected_mode, w.size), w.relpath
        if w.expected is not None:
            np.testing.assert_array_equal(np.asarray(im), w.expected, err_msg=w.relpath)
        meta = json.loads(s["json"])
        assert meta == {"source": storage.join(root_url, w.relpath), "marked": False}


# --- image folders ----------------------------------------------------------------------------


def test_open_image_folder(tmp_path):
    written = make_image_folder(tmp_path)
    src = open_image_folder(str(tmp_path))
    assert src.classes == FOLDER_CLASSES
    assert src.total == len(written)
    samples, rejected = _split(src.items)
    assert rejected == []
    _check_folder_samples(samples, written, str(tmp_path))


def test_open_image_folder_file_url_and_relative_path(tmp_path, monkeypatch):
    written = make_image_folder(tmp_path / "data")
    url = "file://" + str(tmp_path / "data")
    samples, rejected = _split(open_image_folder(url).items)
    assert rejected == []
    _check_folder_samples(samples, written, url)
    monkeypatch.chdir(tmp_path)
    rel_samples, _ = _split(open_image_folder("data").items)
    assert [s["png"] for s in rel_samples] == [s["png"] for s in samples]
    assert [s["__key__"] for s in rel_samples] == [s["__key__"] for s in samples]


def test_open_image_folder_is_deterministic(tmp_path):
    make_image_folder(tmp_path)
    first = list(open_image_folder(str(tmp_path)).items)
    assert list(open_image_folder(str(tmp_path)).items) == first


def test_bad_files_stray_files_and_empty_class_are_rejected(tmp_path):
    written = make_image_folder(tmp_path)
    bad = write_bad_files(tmp_path / "cat")
    (tmp_path / "README.md").write_text("stray")
    (tmp_path / "empty_class").mkdir()
    # hidden files and folders are skipped, not rejected
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "x.png").write_bytes(b"")
    (tmp_path / "dog" / ".DS_Store").write_bytes(b"\x00")
    (tmp_path / "dog" / ".thumbs").mkdir()
    (tmp_path / "dog" / ".thumbs" / "t.png").write_bytes(b"")

    src = open_image_folder(str(tmp_path))
    assert src.classes == (*FOLDER_CLASSES, "empty_class")
    assert src.total == len(written) + len(bad) + 2
    samples, rejected = _split(src.items)
    assert [s["__key__"] for s in samples] == [
        w.key for w in sorted(written.values(), key=lambda w: (w.cls, w.relpath))
    ]
    # stray file first, then the empty folder, then bad files in path order
    assert rejected[0] == Rejected(
        None, f"{tmp_path}/README.md", "not inside a class folder: move it into <source>/<class>/"
    )
    assert rejected[1].key is None and rejected[1].source == f"{tmp_path}/empty_class"
    assert "empty class folder" in rejected[1].reason
    by_source = {r.source: r for r in rejected[2:]}
    assert sorted(by_source) == sorted(f"{tmp_path}/{rel}" for rel in bad)
    for rel, reason in bad.items():
        r = by_source[f"{tmp_path}/{rel}"]
        assert reason in r.reason, (rel, r.reason)
        assert r.key == rel.rsplit(".", 1)[0]


def test_no_class_folders_is_a_value_error(tmp_path):
    (tmp_path / "a.png").write_bytes(image_bytes(Image.new("L", (2, 2)), "PNG"))
    with pytest.raises(ValueError, match="no class sub-folders") as info:
        open_image_folder(str(tmp_path))
    assert str(tmp_path) in str(info.value)


def test_missing_folder_fails_before_any_work(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_image_folder(str(tmp_path / "missing"))


@pytest.mark.integration
def test_open_image_folder_on_s3(tmp_path, s3_bucket):
    written = make_image_folder(tmp_path)
    bad = write_bad_files(tmp_path / "ant")
    (tmp_path / "stray.txt").write_text("x")
    root = storage.join(s3_bucket, "datasets", "tiny")
    upload_tree(tmp_path, root)

    src = open_image_folder(root)
    assert src.classes == FOLDER_CLASSES
    assert src.total == len(written) + len(bad) + 1
    samples, rejected = _split(src.items)
    _check_folder_samples(samples, written, root)
    assert rejected[0].source == f"{root}/stray.txt"
    assert {r.source: r.key for r in rejected[1:]} == {
        f"{root}/{rel}": rel.rsplit(".", 1)[0] for rel in bad
    }
    for r in rejected[1:]:
        assert bad[r.source[len(root) + 1 :]] in r.reason
    # the same pixels as from the local copy
    local, _ = _split(open_image_folder(str(tmp_path)).items)
    assert [s["png"] for s in samples] == [s["png"] for s in local]


@pytest.mark.integration
def test_open_image_folder_on_missing_s3_prefix(s3_bucket):
    with pytest.raises(FileNotFoundError, match="does not exist in bucket"):
        open_image_folder(storage.join(s3_bucket, "nothing"))


# --- IDX files --------------------------------------------------------------------------------


IDX_IMAGES = np.arange(4 * 2 * 3, dtype=np.uint8).reshape(4, 2, 3) * 10  # N=4, H=2, W=3
IDX_LABELS = np.array([3, 0, 12, 9], dtype=np.uint8)


def _write_idx(folder: Path, prefix: str, images, labels, compress: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if compress else ""
    (folder / f"{prefix}-images-idx3-ubyte{ext}").write_bytes(idx_bytes(images, compress=compress))
    (folder / f"{prefix}-labels-idx1-ubyte{ext}").write_bytes(idx_bytes(labels, compress=compress))


def test_idx_bytes_are_what_the_format_says():
    data = idx_bytes(IDX_IMAGES)
    assert data[:4] == b"\x00\x00\x08\x03"  # magic 0x00000803: unsigned bytes, 3 dimensions
    assert data[4:16] == b"\x00\x00\x00\x04\x00\x00\x00\x02\x00\x00\x00\x03"
    assert idx_bytes(IDX_LABELS)[:8] == b"\x00\x00\x08\x01\x00\x00\x00\x04"


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_open_idx(tmp_path, compress):
    _write_idx(tmp_path, "train", IDX_IMAGES, IDX_LABELS, compress)
    src = open_idx(str(tmp_path))
    assert src.classes == FASHION_MNIST_CLASSES and src.total == 4
    items = list(src.items)
    images_url = str(tmp_path / ("train-images-idx3-ubyte" + (".gz" if compress else "")))
    assert items[2] == Rejected("train-000002", f"{images_url}#2", "label 12 outside 0..9")
    for i in (0, 1, 3):
        s = items[i]
        assert s["__key__"] == f"train-{i:06d}"
        assert s["cls"] == str(IDX_LABELS[i])
        im = _decode(s["png"])
        assert (im.mode, im.size) == ("L", (3, 2))
        np.testing.assert_array_equal(np.asarray(im), IDX_IMAGES[i])
        assert json.loads(s["json"]) == {"source": images_url, "index": i, "marked": False}


def test_open_idx_test_split_limit_and_classes(tmp_path):
    _write_idx(tmp_path, "t10k", IDX_IMAGES, np.array([1, 0, 1, 5], np.uint8), compress=True)
    src = open_idx(str(tmp_path), split="test", classes=("no", "yes"), limit=3)
    assert src.classes == ("no", "yes") and src.total == 3
    items = list(src.items)
    assert [i["__key__"] for i in items] == ["test-000000", "test-000001", "test-000002"]
    assert [i["cls"] for i in items] == ["1", "0", "1"]
    assert open_idx(str(tmp_path), split="test", classes=("a",) * 6, limit=99).total == 4


def test_open_idx_label_count_mismatch(tmp_path):
    _write_idx(tmp_path, "train", IDX_IMAGES, IDX_LABELS[:3], compress=False)
    with pytest.raises(ValueError, match="labels for 4 images") as info:
        open_idx(str(tmp_path))
    assert "use the label file of the same split" in str(info.value)


def test_open_idx_errors(tmp_path):
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        open_idx(str(tmp_path), split="val")
    with pytest.raises(FileNotFoundError):
        open_idx(str(tmp_path / "missing"))
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(IDX_IMAGES))
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist") as info:
        open_idx(str(tmp_path))
    assert "train-labels-idx1-ubyte" in str(info.value)
    _write_idx(tmp_path, "train", IDX_LABELS, IDX_LABELS, compress=False)  # 1-D "images"
    with pytest.raises(ValueError, match="expected N×H×W uint8 images"):
        open_idx(str(tmp_path))


@pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists(),
    reason=f"Debian's dataset-fashion-mnist is not installed under {FASHION_MNIST_DIR}",
)
def test_open_idx_on_debian_fashion_mnist():
    src = open_idx(split="test", limit=5)
    assert src.classes == FASHION_MNIST_CLASSES and src.total == 5
    items = list(src.items)
    assert [i["__key__"] for i in items] == [f"test-{i:06d}" for i in range(5)]
    for item in items:
        im = _decode(item["png"])
        assert (im.mode, im.size) == ("L", (28, 28))
        assert 0 <= int(item["cls"]) < 10
    # the first test image of Fashion-MNIST is an ankle boot, the second a pullover
    assert [i["cls"] for i in items[:2]] == ["9", "2"]


# --- existing WebDataset tars -----------------------------------------------------------------


def _tar_samples() -> list[dict]:
    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 256, (4, 4, 4), dtype=np.uint8)
    gray = rng.integers(0, 256, (5, 3), dtype=np.uint8)
    rgb = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return [
        {"__key__": "a/rgba", "png": image_bytes(Image.fromarray(rgba, "RGBA"), "PNG"), "cls": "1"},
        {
            "__key__": "a/gray",
            "png": image_bytes(Image.fromarray(gray), "PNG"),
            "cls": " 0\n",
            "json": json.dumps({"source": "orig.png", "extra": [1, 2]}),
        },
        {"__key__": "b/photo", "jpg": image_bytes(Image.fromarray(rgb), "JPEG"), "cls": "2"},
        {
            "__key__": "b/webp",
            "webp": image_bytes(Image.fromarray(rgb), "WEBP", lossless=True),
            "cls": "0",
            "json": json.dumps({"marked": True}),
        },  # fmt: skip
    ]


def _write_tar(path: Path, samples) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path), encoder=False, mtime=0) as w:
        for s in samples:
            w.write({k: v.encode() if isinstance(v, str) and k != "__key__" else v
                     for k, v in s.items()})  # fmt: skip


def test_open_webdataset_round_trip(tmp_path):
    samples = _tar_samples()
    _write_tar(tmp_path / "in" / "part-0.tar", samples[:2])
    _write_tar(tmp_path / "in" / "part-1.tar", samples[2:])
    src = open_webdataset(str(tmp_path / "in"))
    assert src.classes is None and src.total is None
    items = list(src.items)
    assert all(isinstance(i, dict) for i in items)
    assert [i["__key__"] for i in items] == ["a/rgba", "a/gray", "b/photo", "b/webp"]
    assert [i["cls"] for i in items] == ["1", "0", "2", "0"]
    t0, t1 = str(tmp_path / "in" / "part-0.tar"), str(tmp_path / "in" / "part-1.tar")
    assert [json.loads(i["json"]) for i in items] == [
        {"source": f"{t0}#a/rgba", "marked": False},
        {"source": "orig.png", "extra": [1, 2], "marked": False},
        {"source": f"{t1}#b/photo", "marked": False},
        {"source": f"{t1}#b/webp", "marked": True},
    ]
    modes = [(_decode(i["png"]).mode, _decode(i["png"]).size) for i in items]
    assert modes == [("RGB", (4, 4)), ("L", (3, 5)), ("RGB", (6, 6)), ("RGB", (6, 6))]
    rgba = np.asarray(Image.open(io.BytesIO(samples[0]["png"]))).astype(int)
    white = (rgba[..., :3] * rgba[..., 3:] + 255 * (255 - rgba[..., 3:]) + 127) // 255
    np.testing.assert_array_equal(np.asarray(_decode(items[0]["png"])), white)
    np.testing.assert_array_equal(
        np.asarray(_decode(items[3]["png"])), np.asarray(Image.open(io.BytesIO(samples[3]["webp"])))
    )
    # the output is a valid shard sample: re-encoding gives the same bytes
    assert items[1] == make_sample("a/gray", items[1]["png"], 0, json.loads(items[1]["json"]))


def test_open_webdataset_url_forms(tmp_path):
    samples = _tar_samples()
    for i in range(3):
        _write_tar(tmp_path / f"s-{i}.tar", samples[i : i + 1])
    urls = [str(tmp_path / f"s-{i}.tar") for i in range(3)]
    assert tar_urls(str(tmp_path)) == urls
    assert tar_urls(str(tmp_path / "s-*.tar")) == urls
    assert tar_urls(urls[::-1]) == urls
    assert tar_urls(urls[1]) == [urls[1]]
    with pytest.raises(FileNotFoundError, match="no .tar shards found"):
        tar_urls(str(tmp_path / "x-*.tar"))
    with pytest.raises(FileNotFoundError):
        tar_urls(str(tmp_path / "missing.tar"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .tar shards found"):
        tar_urls(str(tmp_path / "empty"))
    keys = [i["__key__"] for i in open_webdataset(str(tmp_path / "s-*.tar")).items]
    assert keys == ["a/rgba", "a/gray", "b/photo"]


def test_open_webdataset_truncated_tar(tmp_path):
    samples = _tar_samples()
    full = tmp_path / "full.tar"
    _write_tar(full, samples)
    data = full.read_bytes()
    with tarfile.open(full) as tar:
        last = tar.getmembers()[-1]  # b/webp's last member
        cut = last.offset_data + last.size // 2
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "cut.tar").write_bytes(data[:cut])
    items = list(open_webdataset(str(tmp_path / "in")).items)
    assert [i["__key__"] for i in items[:3]] == ["a/rgba", "a/gray", "b/photo"]
    assert len(items) == 4 and isinstance(items[3], Rejected)
    assert items[3].key is None and items[3].source == str(tmp_path / "in" / "cut.tar")
    assert "truncated after 3 samples" in items[3].reason


def test_open_webdataset_tar_cut_at_a_member_boundary(tmp_path):
    samples = _tar_samples()
    full = tmp_path / "full.tar"
    _write_tar(full, samples)
    with tarfile.open(full) as tar:
        cut = tar.getmembers()[-1].offset  # the header of b/webp's last member
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "cut.tar").write_bytes(full.read_bytes()[:cut])
    items = list(open_webdataset(str(tmp_path / "in")).items)
    assert [type(i) for i in items] == [dict, dict, dict, Rejected]
    assert "truncated after 3 samples" in items[3].reason


def test_open_webdataset_classes_json_and_bad_samples(tmp_path):
    good = _tar_samples()[1]
    bad = [
        {"__key__": "x/no_image", "cls": "0", "txt": "hello"},
        {"__key__": "x/no_cls", "png": good["png"]},
        {"__key__": "x/text_cls", "png": good["png"], "cls": "cat"},
        {"__key__": "x/big_cls", "png": good["png"], "cls": "2"},
        {"__key__": "x/neg_cls", "png": good["png"], "cls": "-1"},
        {"__key__": "x/bad_json", "png": good["png"], "cls": "1", "json": "{nope"},
        {"__key__": "x/list_json", "png": good["png"], "cls": "1", "json": "[1]"},
        {"__key__": "x/bad_png", "png": good["png"][: len(good["png"]) // 2], "cls": "1"},
        {"__key__": "x/ok", "png": good["png"], "cls": "1"},
    ]
    _write_tar(tmp_path / "d" / "a.tar", bad)
    (tmp_path / "d" / "classes.json").write_text(json.dumps(["zero", "one"]))
    src = open_webdataset(str(tmp_path / "d" / "a.tar"))
    assert src.classes == ("zero", "one")
    items = list(src.items)
    reasons = {i.key: i.reason for i in items if isinstance(i, Rejected)}
    assert [i["__key__"] for i in items if isinstance(i, dict)] == ["x/ok"]
    assert "no image in the sample" in reasons["x/no_image"]
    assert reasons["x/no_cls"] == reasons["x/text_cls"] == "missing or non-integer cls"
    assert "cls 2 outside the 2 classes of classes.json" in reasons["x/big_cls"]
    assert "cls -1 outside" in reasons["x/neg_cls"]
    assert reasons["x/bad_json"] == "json member is not valid JSON"
    assert reasons["x/list_json"] == "json member is not a JSON object"
    assert "corrupt or truncated" in reasons["x/bad_png"]
    sources = {i.key: i.source for i in items if isinstance(i, Rejected)}
    assert sources["x/no_cls"] == f"{tmp_path}/d/a.tar#x/no_cls"


def test_open_webdataset_bad_classes_json(tmp_path):
    _write_tar(tmp_path / "a.tar", _tar_samples()[:1])
    (tmp_path / "classes.json").write_text(json.dumps({"0": "zero"}))
    with pytest.raises(ValueError, match="must hold a JSON list of class names"):
        open_webdataset(str(tmp_path))


@pytest.mark.integration
def test_open_webdataset_on_s3(tmp_path, s3_bucket):
    samples = _tar_samples()
    _write_tar(tmp_path / "part-0.tar", samples)
    (tmp_path / "classes.json").write_text(json.dumps(["a", "b", "c"]))
    root = storage.join(s3_bucket, "wds")
    upload_tree(tmp_path, root)
    local = list(open_webdataset(str(tmp_path)).items)
    src = open_webdataset(root)
    assert src.classes == ("a", "b", "c")
    remote = list(src.items)
    assert [i["png"] for i in remote] == [i["png"] for i in local]
    assert json.loads(remote[0]["json"])["source"] == f"{root}/part-0.tar#a/rgba"
