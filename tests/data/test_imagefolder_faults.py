"""Image folders as users have them: notebooks' hidden checkpoints, stray files, nested folders, 16-bit scans and
huge images. kdcli never trains on a wrong class list: it leaves out what is not a class's image and says so, and
refuses what it cannot label or convert faithfully (docs/reliability.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kdcli.cli import main
from kdcli.data import scan_image_folder

FOLDER_RUN = ["train", "--model", "resnet8", "--data", "imagefolder", "--epochs", "1", "--device", "cpu",
              "--set", "data.image_size=32", "--set", "data.workers=0"]  # fmt: skip


def image_folder(root: Path, classes: tuple[str, ...] = ("a", "b")) -> Path:
    generator = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(generator.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
                    root / split / name / f"{i}.png"
                )
    return root


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return int(exit_info.value.code or 0), capsys.readouterr().err


def test_hidden_folders_and_stray_files_are_left_out_and_named(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A notebook's .ipynb_checkpoints would have been a third class (timm labels by folder name); a README a skipped
    file nobody was told about."""
    root = image_folder(tmp_path / "data")
    (root / "train" / ".ipynb_checkpoints").mkdir()
    Image.new("RGB", (16, 16)).save(root / "train" / ".ipynb_checkpoints" / "x.png")
    (root / "train" / "a" / "README.txt").write_text("notes")
    (root / "train" / "loose.png").write_bytes((root / "train" / "a" / "0.png").read_bytes())
    classes, notes = scan_image_folder(root / "train")
    assert classes == {"a": 0, "b": 1}
    assert any("1 hidden (.ipynb_checkpoints)" in n for n in notes)
    assert any("1 not an image (a/README.txt)" in n for n in notes)
    assert any("1 outside a class folder (loose.png)" in n for n in notes)
    code, err = run(capsys, *FOLDER_RUN, "--data-dir", str(root), "--out", str(tmp_path / "r"))
    assert code == 0, err
    assert "note: left out of" in err and ".ipynb_checkpoints" in err


def test_images_in_a_folder_inside_a_class_folder_are_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """timm would label train/a/b/x.png as class b: a wrong label, silently."""
    root = image_folder(tmp_path / "data")
    (root / "train" / "a" / "b").mkdir()
    Image.new("RGB", (16, 16)).save(root / "train" / "a" / "b" / "x.png")
    code, err = run(capsys, *FOLDER_RUN, "--data-dir", str(root), "--out", str(tmp_path / "r"))
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "holds images inside the class folder" in err


def test_a_16_bit_image_is_refused_by_name(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Converting a 16-bit grey PNG to RGB clips every value above 255: the model would see a white image."""
    root = image_folder(tmp_path / "data")
    deep = root / "train" / "b" / "scan.png"
    Image.fromarray(np.full((16, 16), 40000, dtype=np.uint16)).save(deep)
    assert Image.open(deep).mode.startswith("I")
    code, err = run(capsys, *FOLDER_RUN, "--data-dir", str(root), "--out", str(tmp_path / "r"))
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "scan.png is a 'I" in err and "would clip" in err


def test_a_decompression_bomb_is_refused_by_name(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PIL refuses an image over twice its pixel limit with DecompressionBombError, which is not an OSError and
    ended in a traceback. The limit is lowered here instead of writing a 15000 × 15000 PNG."""
    root = image_folder(tmp_path / "data")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 16 × 16 = 256 pixels > 2 × 100
    code, err = run(capsys, *FOLDER_RUN, "--data-dir", str(root), "--out", str(tmp_path / "r"))
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "too large to decode safely" in err
