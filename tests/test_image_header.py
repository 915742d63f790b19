"""Images judged by their header before decoding (simclr_tf/data/image_header.py)."""

import io
import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf
from PIL import Image

from simclr_tf.data import image_header, open_source

from conftest import REPO


def _encoded(fmt, width, height):
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP"])
@pytest.mark.parametrize("width, height", [(1, 1), (37, 5), (300, 2000)])
def test_header_pixels_are_width_times_height(fmt, width, height):
    assert int(image_header.header_pixels(_encoded(fmt, width, height))) == width * height


def test_unknown_or_truncated_headers_say_minus_one():
    assert int(image_header.header_pixels(b"not an image")) == -1
    assert int(image_header.header_pixels(_encoded("PNG", 4, 4)[:12])) == -1


def _extreme_shapes_folder(tmp_path, small):
    """`small` 32 x 32 PNGs, a 1 x 1 and a 65535 x 1 one."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(small):
        (folder / f"small_{i}.png").write_bytes(_encoded("PNG", 32, 32))
    (folder / "tiny.png").write_bytes(_encoded("PNG", 1, 1))
    (folder / "long.png").write_bytes(_encoded("PNG", 65535, 1))
    return folder


def _bomb(path, side=13000):
    """A real, decodable PNG of side x side RGB pixels (0.5 GB decoded, just under
    TensorFlow's 2^29-byte decoder limit), a few hundred KB on disk."""
    Image.new("RGB", (side, side)).save(path, format="PNG", compress_level=9)


def test_a_decompression_bomb_is_skipped_before_it_is_decoded(tmp_path):
    """A folder of small images, a 1 x 1, a 65535 x 1 and a 13000 x 13000 PNG bomb: the
    bomb is skipped and counted, everything else decodes. Measured in a process of its
    own: reading the folder's images must not allocate the bomb's decoded 0.5 GB."""
    folder = _extreme_shapes_folder(tmp_path, small=5)
    _bomb(folder / "bomb.png")
    decoded_bomb = 13000 * 13000 * 3
    assert decoded_bomb < 2**29  # TensorFlow's own limit would not stop it
    # VmHWM: this process image's peak. (getrusage's ru_maxrss survives exec, so a
    # child of a large pytest process would report its parent's peak.)
    script = f"""
import json, resource
from simclr_tf.data import open_source
def status(field):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(field + ":"))
source = open_source("folder:{folder}")
data = source.load("train", False)
before = status("VmRSS")
shapes = sorted(tuple(e["image"].shape) for e in data)
print(json.dumps({{"shapes": shapes, "skipped": source.skipped.value,
                  "grew": status("VmHWM") - before}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["skipped"] == 1
    assert sorted(map(tuple, result["shapes"])) == sorted(
        [(32, 32, 3)] * 5 + [(1, 1, 3), (1, 65535, 3)]
    )
    assert result["grew"] < decoded_bomb, result


def test_the_limit_is_a_setting(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.png").write_bytes(_encoded("PNG", 100, 100))
    (folder / "b.png").write_bytes(_encoded("PNG", 10, 10))
    source = open_source(f"folder:{folder}", max_pixels=5000)
    assert [tuple(e["image"].shape) for e in source.load("train", False)] == [(10, 10, 3)]
    assert source.skipped.value == 1
    strict = open_source(f"folder:{folder}", strict=True, max_pixels=5000)
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_image_pixels"):
        [e for e in strict.load("train", False)]


def test_a_1x1_and_a_65535x1_image_train(tmp_path):
    """Extreme shapes go through the whole pretraining pipeline (random crop, resize,
    colour, the step): a folder of exactly one batch, so a step happens only if every
    image in it was decoded and augmented; the run ends with finite weights."""
    folder = _extreme_shapes_folder(tmp_path, small=2)
    run = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "simclr_tf.main",
            "--flagfile=flags/study_cpu.cfg",
            f"--dataset=folder:{folder}",
            f"--model_dir={run}",
            "--batch_size=4",
            "--train_steps=2",
            "--checkpoint_steps=2",
            "--width_multiplier=0.125",
            "--warmup_epochs=0",
            "--shuffle_buffer=4",
            "--cache=false",
            "--strategy=one_device",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    latest = tf.train.latest_checkpoint(str(run))
    assert latest is not None and latest.endswith("-2"), os.listdir(run)
    reader = tf.train.load_checkpoint(latest)
    import numpy as np

    for key in reader.get_variable_to_shape_map():
        value = reader.get_tensor(key)
        if np.issubdtype(np.asarray(value).dtype, np.floating):
            assert np.isfinite(value).all(), key
