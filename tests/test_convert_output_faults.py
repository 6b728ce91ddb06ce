"""Output-folder faults of ``tflq convert``: each is one clear line, found before the export when it can be, and a
disk that fills up mid-run fails only the variants that do not fit (the others are still attempted).

Disk-full and read-only cases use a real tmpfs (``mount -t tmpfs``), so they need root; they skip with the reason
otherwise. chmod is no test of read-only for root, who bypasses permissions.
"""
from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.cli_helpers import assert_nothing_written, assert_usage_error, convert, error_line
from tests.sample_paths import SAMPLES

CNN = str(SAMPLES / "digits_cnn.keras")


@pytest.fixture()
def tmpfs(tmp_path: Path):
    """``mount(size, read_only=False) -> Path``: a small tmpfs under tmp_path, unmounted at teardown."""
    mounted: list[Path] = []

    def mount(size: str = "64k", *, read_only: bool = False) -> Path:
        point = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
        point.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip() or done.returncode}")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], check=False)


def _fill(folder: Path, *, leave: int) -> None:
    """Fill ``folder``'s file system until at most ``leave`` bytes are free."""
    stats = os.statvfs(folder)
    free = stats.f_bavail * stats.f_frsize
    with open(folder / "filler", "wb") as stream:
        try:
            stream.write(b"\0" * max(0, free - leave))
            stream.flush()
            os.fsync(stream.fileno())
        except OSError:
            pass  # full already: what was asked for


def test_output_folder_is_a_file(tmp_path):
    target = tmp_path / "plain_file"
    target.write_text("mine")
    assert_usage_error(convert(CNN, out=target), str(target), "exists and is not a folder")
    assert target.read_text() == "mine"


def test_output_folder_under_a_file(tmp_path):
    parent = tmp_path / "plain_file"
    parent.write_text("mine")
    assert_usage_error(convert(CNN, out=parent / "sub"), str(parent), "is a file, not a folder")


def test_output_path_exists_as_a_directory(tmp_path):
    out = tmp_path / "out"
    (out / "digits_cnn.float32.tflite").mkdir(parents=True)
    assert_usage_error(convert(CNN, out=out), "digits_cnn.float32.tflite", "exists as a directory")


def test_output_name_too_long_is_found_before_the_export(tmp_path):
    out = tmp_path / "out"
    result = convert(CNN, "--name", "n" * 250, out=out)
    assert_usage_error(result, "bytes, the file system of", "allows 255", "shorter --name")
    assert "export" not in result.output
    assert not out.exists()  # the folder this run created is removed again


def test_empty_output_dir_is_an_error_not_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_usage_error(convert_raw(CNN, "-o", ""), "-o/--output-dir is empty")
    assert not list(tmp_path.iterdir())


def convert_raw(*args: str):
    from click.testing import CliRunner

    from tflq.cli.app import main

    return CliRunner().invoke(main, ["convert", *args], catch_exceptions=False)


def test_a_bad_input_removes_the_output_folders_it_created(tmp_path):
    out = tmp_path / "new" / "deeper"
    assert_usage_error(convert(CNN, "--mode", "int8", out=out), "need calibration data")
    assert not (tmp_path / "new").exists()


def test_written_files_respect_the_umask(tmp_path):
    from tflq.convert.session import write_atomically  # where batch, report and the CLI import it from

    previous = os.umask(0o027)
    try:
        write_atomically(tmp_path / "a.bin", b"x")
        os.umask(0o002)
        write_atomically(tmp_path / "b.bin", b"x")
    finally:
        os.umask(previous)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "b.bin").stat().st_mode & 0o777 == 0o664
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin"]  # no temporary file left


def test_read_only_output_folder_fails_before_the_export(tmpfs):
    folder = tmpfs(read_only=True)
    result = convert(CNN, out=folder)
    assert_usage_error(result, str(folder), "read-only file system")
    assert "export" not in result.output
    result = convert(CNN, out=folder / "sub")
    assert_usage_error(result, "cannot create output folder", "read-only file system")


def test_full_output_folder_fails_before_the_export(tmpfs):
    folder = tmpfs("64k")
    _fill(folder, leave=0)
    result = convert(CNN, out=folder)
    assert_usage_error(result, f"cannot write in output folder {folder}: disk full")
    assert "export" not in result.output


@pytest.mark.slow
def test_disk_full_fails_that_variant_removes_its_stale_file_and_tries_the_rest(tmpfs):
    folder = tmpfs("96k")
    stale = folder / "digits_cnn.float32.tflite"
    stale.write_bytes(b"an older run's model")
    _fill(folder, leave=16 * 1024)  # room for the probe, not for the float32 model (about 39 kB)
    result = convert(CNN, "--mode", "float32", "--mode", "float16", "--mode", "dynamic", "--json", out=folder)
    assert result.exit_code == 1, result.output
    rows = {row["mode"]: row for row in json.loads(result.stdout)}
    assert list(rows) == ["float32", "float16", "dynamic"]  # every variant attempted
    assert rows["float32"]["status"] == "error"
    assert rows["float32"]["error"] == f"cannot write {stale}: disk full"
    assert not stale.exists()  # the stale file must not pass for this run's output
    for row in rows.values():
        assert row["status"] == "ok" or row["error"].endswith(": disk full"), row
        assert Path(row["path"]).exists() == (row["status"] == "ok")
    assert "variant(s) failed: float32" in error_line(result)
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_nothing_written_on_a_name_error(tmp_path):
    out = tmp_path / "out"
    assert_usage_error(convert(CNN, "--name", "", out=out), "--name ''", "empty")
    assert_nothing_written(out)


def test_output_folder_is_a_dangling_symlink(tmp_path):
    link = tmp_path / "out"
    link.symlink_to(tmp_path / "gone")
    assert_usage_error(convert(CNN, out=link), f"{link} is a symbolic link to {tmp_path / 'gone'}, which does not exist")
    assert not (tmp_path / "gone").exists()


def test_output_folder_is_a_symlink_to_a_file(tmp_path):
    target = tmp_path / "plain_file"
    target.write_text("mine")
    link = tmp_path / "out"
    link.symlink_to(target)
    assert_usage_error(convert(CNN, out=link), str(link), "exists and is not a folder")
    assert target.read_text() == "mine"
