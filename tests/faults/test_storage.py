"""Storage that is full or not writable is a one-line error at the start of a study, before Ray or any node
starts — not a crash in hour three. Tests run as root here, where chmod stops nothing: a read-only and a
full file system are small tmpfs mounts (skipped where mounting is not allowed), a file stands where a
folder is expected, and /proc refuses new folders."""

import os
import subprocess
import sys
import uuid

import pytest

from proda.ablation.runner import StudyError, probe_storage

from .conftest import ROOT, study_env, write_grid


def _mount_tmpfs(path, options):
    path.mkdir()
    if os.geteuid() != 0:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


@pytest.fixture
def full_disk(tmp_path):
    """A 256 KiB file system: the probe's 1 MiB does not fit."""
    path = tmp_path / "full"
    if not _mount_tmpfs(path, "size=256k"):
        pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)")
    yield path
    subprocess.run(["umount", str(path)], check=True)


@pytest.fixture
def read_only(tmp_path):
    path = tmp_path / "ro"
    if os.geteuid() != 0:
        path.mkdir()
        path.chmod(0o500)  # stops a normal user
        yield path
        path.chmod(0o700)
        return
    if not _mount_tmpfs(path, "ro,size=1m"):
        pytest.skip("cannot mount a read-only tmpfs here (root ignores chmod)")
    yield path
    subprocess.run(["umount", str(path)], check=True)


def _refused(study, *needles):
    with pytest.raises(StudyError) as e:
        probe_storage(study)
    msg = str(e.value)
    assert msg.startswith(f"--storage '{study}': not writable (") and "\n" not in msg, msg
    for n in needles:
        assert n in msg, msg
    return msg


def test_full_disk_is_refused_at_the_start_and_leaves_no_probe_behind(full_disk, record_property):
    record_property("fault", "storage full (256 KiB tmpfs)")
    _refused(full_disk / "study", "No space left on device")
    assert [p.name for p in (full_disk / "study").iterdir()] == []


def test_read_only_storage_is_refused(read_only, record_property):
    record_property("fault", "storage read-only")
    _refused(read_only / "study")


def test_a_file_where_the_storage_folder_should_be_is_refused(tmp_path, record_property):
    record_property("fault", "storage path blocked by a file")
    (tmp_path / "studies").write_text("not a folder")
    _refused(tmp_path / "studies" / "g", "Not a directory")


def test_storage_under_proc_is_refused(record_property):
    record_property("fault", "storage on a file system that takes no folders")
    _refused(__import__("pathlib").Path(f"/proc/proda-{uuid.uuid4().hex[:8]}/g"))


def test_study_on_a_full_disk_exits_2_with_one_line_before_ray_starts(full_disk, tmp_path, synthetic_cache,
                                                                      record_property):
    record_property("fault", "storage full, through experiments/ablation.py")
    grid = write_grid(tmp_path / "g.yaml", "g", ["source-only"], {"warmup.steps": 4})
    p = subprocess.run([sys.executable, "experiments/ablation.py", "--grid", str(grid), "--storage", str(full_disk)],
                       cwd=ROOT, env=study_env(synthetic_cache), capture_output=True, text=True, timeout=180)
    err = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(err) == 1, p.stderr
    assert err[0] == f"error: --storage '{full_disk / 'g'}': not writable (No space left on device)"
    assert "Ray" not in p.stdout + p.stderr and "running up to" not in p.stdout
