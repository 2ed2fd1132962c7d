import io
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from tasks.images import BadImage, decode_image, encode_png, normalize_image, sanitize_key
from tests.tasks.helpers import composite_on_white, gray16_to_8, image_bytes, write_bad_files

RNG_SEED = 7


def _rng() -> np.random.Generator:
    return np.random.default_rng(RNG_SEED)


def _png_chunks(data: bytes) -> list[bytes]:
    """Chunk types of a PNG file, in order."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, types = 8, []
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        types.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    return types


def _pixels(im: Image.Image) -> np.ndarray:
    return np.asarray(im)


# --- the pixel rule, mode by mode -------------------------------------------------------------


def test_L_stays_gray_and_exact():
    arr = _rng().integers(0, 256, (5, 7), dtype=np.uint8)
    out = decode_image(image_bytes(Image.fromarray(arr), "PNG"))
    assert out.mode == "L" and out.size == (7, 5)
    np.testing.assert_array_equal(_pixels(out), arr)


def test_bilevel_becomes_L_0_or_255():
    bits = _rng().integers(0, 2, (4, 6)).astype(bool)
    out = decode_image(image_bytes(Image.fromarray(bits), "PNG"))
    assert out.mode == "L"
    np.testing.assert_array_equal(_pixels(out), np.where(bits, 255, 0))


def test_rgb_stays_rgb_and_exact():
    arr = _rng().integers(0, 256, (6, 4, 3), dtype=np.uint8)
    out = decode_image(image_bytes(Image.fromarray(arr), "PNG"))
    assert out.mode == "RGB" and out.size == (4, 6)
    np.testing.assert_array_equal(_pixels(out), arr)


def test_16bit_gray_png_is_scaled_with_rounding():
    values = [0, 1, 128, 129, 385, 386, 32767, 32768, 65279, 65280, 65534, 65535]
    values += _rng().integers(0, 65536, 4).tolist()
    arr = np.array(values, dtype="<u2").reshape(2, 8)
    im = Image.frombytes("I;16", (8, 2), arr.tobytes())
    out = decode_image(image_bytes(im, "PNG"))
    assert out.mode == "L"
    expected = [[gray16_to_8(int(v)) for v in row] for row in arr]
    np.testing.assert_array_equal(_pixels(out), np.array(expected, np.uint8))
    # spot checks, by hand: 128/257 = 0.498 -> 0, 129/257 = 0.502 -> 1, 32768/257 = 127.5019
    assert _pixels(out)[0, :4].tolist() == [0, 0, 0, 1]
    assert _pixels(out)[0, 6:8].tolist() == [127, 128]
    assert _pixels(out)[1, :4].tolist() == [254, 254, 255, 255]


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L"])
def test_16bit_modes_in_memory(mode):
    vals = np.array([[0, 257, 65535, 1000]], dtype=">u2" if mode == "I;16B" else "<u2")
    im = Image.frombytes(mode, (4, 1), vals.tobytes())
    out = normalize_image(im)
    assert out.mode == "L"
    assert _pixels(out).tolist() == [[0, 1, 255, 4]]  # 1000/257 = 3.89


def test_32bit_I_is_clipped_to_16_bits_then_scaled():
    arr = np.array([[-5, 0, 70000, 65535, 257, 514]], dtype=np.int32)
    out = normalize_image(Image.fromarray(arr))
    assert out.mode == "L"
    assert _pixels(out).tolist() == [[0, 0, 255, 255, 1, 2]]


def test_rgba_is_composited_on_white():
    rng = _rng()
    arr = rng.integers(0, 256, (6, 6, 4), dtype=np.uint8)
    arr[0, :6, 3] = [0, 255, 128, 1, 254, 127]
    arr[0, :6, :3] = [[0, 0, 0], [10, 20, 30], [0, 100, 255], [0, 0, 0], [0, 0, 0], [200, 1, 2]]
    out = decode_image(image_bytes(Image.fromarray(arr, "RGBA"), "PNG"))
    assert out.mode == "RGB"
    expected = [
        [[composite_on_white(int(px[c]), int(px[3])) for c in range(3)] for px in row]
        for row in arr
    ]
    np.testing.assert_array_equal(_pixels(out), np.array(expected, np.uint8))
    # by hand: transparent -> white, opaque -> unchanged, c=0 at a=128 -> 127 (126.5 + ... )
    first = _pixels(out)[0].tolist()
    assert first[0] == [255, 255, 255]
    assert first[1] == [10, 20, 30]
    assert first[2] == [127, 177, 255]  # 0*128/255+127 = 127.0; 100*128/255+127 = 177.196
    assert first[3] == [254, 254, 254]  # 255 - 1 = 254
    assert first[4] == [1, 1, 1]  # 255 * (1 - 254/255) = 1


def test_LA_is_composited_on_white_and_stays_gray():
    arr = _rng().integers(0, 256, (4, 5, 2), dtype=np.uint8)
    arr[0, :3, 1] = [0, 255, 64]
    arr[0, :3, 0] = [17, 17, 17]
    out = decode_image(image_bytes(Image.fromarray(arr, "LA"), "PNG"))
    assert out.mode == "L" and out.size == (5, 4)
    expected = [[composite_on_white(int(px[0]), int(px[1])) for px in row] for row in arr]
    np.testing.assert_array_equal(_pixels(out), np.array(expected, np.uint8))
    assert _pixels(out)[0, :3].tolist() == [255, 17, 195]  # 17*64/255 + 191 = 195.27


def test_palette_becomes_rgb_by_lookup():
    palette = [255, 0, 0, 0, 128, 0, 10, 20, 30]
    idx = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    im = Image.frombytes("P", (3, 2), idx.tobytes())
    im.putpalette(palette)
    out = decode_image(image_bytes(im, "PNG"))
    assert out.mode == "RGB"
    expected = [[palette[3 * i : 3 * i + 3] for i in row] for row in idx.tolist()]
    assert _pixels(out).tolist() == expected


def test_palette_transparency_entry_is_composited_on_white():
    palette = [255, 0, 0, 0, 128, 0, 10, 20, 30]
    idx = np.array([[0, 1, 2]], dtype=np.uint8)
    im = Image.frombytes("P", (3, 1), idx.tobytes())
    im.putpalette(palette)
    out = decode_image(image_bytes(im, "PNG", transparency=1))  # index 1 fully transparent
    assert out.mode == "RGB"
    assert _pixels(out).tolist() == [[[255, 0, 0], [255, 255, 255], [10, 20, 30]]]


def test_gray_and_rgb_transparency_colour_is_composited_on_white():
    gray = Image.fromarray(np.array([[5, 9, 5]], dtype=np.uint8))
    out = decode_image(image_bytes(gray, "PNG", transparency=5))
    assert out.mode == "L" and _pixels(out).tolist() == [[255, 9, 255]]
    rgb = Image.fromarray(np.array([[[1, 2, 3], [4, 5, 6]]], dtype=np.uint8))
    out = decode_image(image_bytes(rgb, "PNG", transparency=(4, 5, 6)))
    assert out.mode == "RGB" and _pixels(out).tolist() == [[[1, 2, 3], [255, 255, 255]]]


def test_cmyk_goes_through_pillows_rgb_conversion():
    im = Image.frombytes("CMYK", (2, 1), bytes([0, 0, 0, 0, 0, 0, 0, 255]))
    out = decode_image(image_bytes(im, "JPEG", quality=100))
    assert out.mode == "RGB"
    white, black = _pixels(out).astype(int).tolist()[0]
    assert min(white) >= 250 and max(black) <= 5  # JPEG is lossy: near, not exact


def test_exif_orientation_is_applied():
    arr = np.arange(2 * 3, dtype=np.uint8).reshape(2, 3) * 40  # W=3, H=2
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    out = decode_image(image_bytes(Image.fromarray(arr), "PNG", exif=exif))
    assert out.size == (2, 3)
    # 90° clockwise: the left column, read bottom to top, becomes the top row.
    assert _pixels(out).tolist() == [[120, 0], [160, 40], [200, 80]]


def test_animated_file_gives_its_first_frame():
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=10)
    out = decode_image(buf.getvalue())
    assert out.mode == "RGB"
    assert {tuple(p) for p in _pixels(out).reshape(-1, 3).tolist()} == {(255, 0, 0)}


def test_colour_profile_is_ignored_values_kept():
    arr = _rng().integers(0, 256, (3, 3, 3), dtype=np.uint8)
    data = image_bytes(Image.fromarray(arr), "PNG", icc_profile=b"\x00" * 128)
    np.testing.assert_array_equal(_pixels(decode_image(data)), arr)


# --- refusals ---------------------------------------------------------------------------------


def test_float_mode_is_refused_in_memory_and_from_a_file():
    im = Image.fromarray(np.zeros((2, 2), np.float32))
    assert im.mode == "F"
    with pytest.raises(BadImage, match="unsupported pixel mode 'F'"):
        normalize_image(im)
    with pytest.raises(BadImage, match="unsupported pixel mode 'F'"):
        decode_image(image_bytes(im, "TIFF"))


def test_bad_files_are_refused_with_their_reason(tmp_path):
    expected = write_bad_files(tmp_path / "cls")
    assert len(expected) == 4
    for rel, reason in expected.items():
        data = (tmp_path / rel).read_bytes()
        if rel.endswith(".txt"):
            continue  # an extension question, for sources; its bytes are not an image either
        with pytest.raises(BadImage) as info:
            decode_image(data)
        assert reason in str(info.value), (rel, str(info.value))


def test_empty_truncated_and_non_image_messages():
    with pytest.raises(BadImage, match="empty file"):
        decode_image(b"")
    full = image_bytes(Image.fromarray(_rng().integers(0, 256, (32, 32, 3), np.uint8)), "PNG")
    with pytest.raises(BadImage, match="corrupt or truncated"):
        decode_image(full[: len(full) // 2])
    with pytest.raises(BadImage, match="not an image Pillow can identify"):
        decode_image(b"this is a text file, not a picture\n" * 4)
    assert isinstance(BadImage("x"), ValueError)  # callers may catch ValueError


def test_corrupt_png_data_is_refused():
    data = bytearray(image_bytes(Image.fromarray(np.zeros((16, 16), np.uint8)), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 6 : idat + 12] = b"\xff" * 6  # break the zlib stream, keep the length
    with pytest.raises(BadImage, match="corrupt or truncated"):
        decode_image(bytes(data))


# --- encode_png -------------------------------------------------------------------------------


def test_encode_png_round_trips_and_is_deterministic():
    arr = _rng().integers(0, 256, (8, 8, 3), dtype=np.uint8)
    a = encode_png(Image.fromarray(arr))
    b = encode_png(Image.fromarray(arr.copy()))
    assert a == b
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(a))), arr)
    assert _png_chunks(a) == [b"IHDR", b"IDAT", b"IEND"]


def test_encode_png_strips_metadata():
    arr = _rng().integers(0, 256, (8, 8), dtype=np.uint8)
    plain = encode_png(Image.fromarray(arr))
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "made by a camera")
    info.add_itxt("Author", "someone", zip=True)
    rich = image_bytes(
        Image.fromarray(arr), "PNG", pnginfo=info, icc_profile=b"\x01" * 200, dpi=(300, 300)
    )
    assert {b"tEXt", b"iTXt", b"iCCP", b"pHYs"} <= set(_png_chunks(rich))
    assert encode_png(decode_image(rich)) == plain
    im = Image.fromarray(arr)
    im.info.update(icc_profile=b"\x02" * 64, dpi=(72, 72), comment="x")
    assert encode_png(im) == plain


def test_encode_png_uses_a_fixed_compression_level():
    arr = np.tile(np.arange(64, dtype=np.uint8), (64, 1))
    data = encode_png(Image.fromarray(arr))
    idat = data[data.index(b"IDAT") + 4 : data.index(b"IEND") - 8]
    assert zlib.decompress(idat)  # one plain zlib stream
    assert idat[1] >> 6 == 2  # FLEVEL 2: zlib's "default" (level 6)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "I;16", "1"])
def test_encode_png_refuses_non_normalized_modes(mode):
    with pytest.raises(ValueError, match="normalize it first"):
        encode_png(Image.new(mode, (2, 2)))


# --- sanitize_key -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relpath", "key"),
    [
        ("cat/img_01", "cat/img_01"),
        ("cat/my photo.v2", "cat/my_photo_v2"),
        ("dog/sub dir/a-b", "dog/sub_dir/a-b"),
        ("./x//y/", "x/y"),
        ("Ünïcödé/名前", "_n_c_d_/_"),
        ("a..b/c", "a_b/c"),
        ("..", "_"),
    ],
)
def test_sanitize_key(relpath, key):
    assert sanitize_key(relpath) == key


@pytest.mark.parametrize("relpath", ["", "/", ".", "./", "//./"])
def test_sanitize_key_refuses_empty(relpath):
    with pytest.raises(ValueError, match="rename the file"):
        sanitize_key(relpath)
