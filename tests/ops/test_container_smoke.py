"""scripts/container-smoke's own logic: where it cannot run, it says why and exits 0; the
image it builds is described by a Containerfile with the parts the issue asks for. (The smoke
run itself needs podman and a base image: see the README's "Container" section.)"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "container-smoke"


def tools(tmp_path: Path, *names: str, podman: str | None = None) -> str:
    """A PATH holding only ``names`` (linked from this machine) and, given its script, a
    stand-in ``podman``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("bash", "dirname", "tail", "echo", *names):
        found = shutil.which(name)
        assert found is not None, name
        (bin_dir / name).symlink_to(found)
    if podman is not None:
        stub = bin_dir / "podman"
        stub.write_text("#!/usr/bin/env bash\n" + podman)
        stub.chmod(0o755)
    return str(bin_dir)


def smoke(path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [shutil.which("bash") or "bash", str(SCRIPT)],
        env={"PATH": path, "HOME": os.environ.get("HOME", "/tmp")},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_without_podman_it_says_so_and_exits_0(tmp_path: Path) -> None:
    result = smoke(tools(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "container-smoke: SKIPPED: podman is not installed (apt-get install -y podman)"
    )


def test_an_unusable_podman_is_named(tmp_path: Path) -> None:
    podman = 'echo "Error: cannot set up namespace: permission denied" >&2; exit 125\n'
    result = smoke(tools(tmp_path, podman=podman))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "container-smoke: SKIPPED: podman cannot run here: "
        "Error: cannot set up namespace: permission denied"
    )


def test_a_missing_base_image_is_named_with_the_way_out(tmp_path: Path) -> None:
    podman = 'case "$1" in info) exit 0 ;; *) exit 1 ;; esac\n'  # no image here, no registry
    result = smoke(tools(tmp_path, podman=podman))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "container-smoke: SKIPPED: base image python:3.12-slim is not here and cannot be "
        "pulled; make one with --make-base"
    )


def test_a_failed_build_fails(tmp_path: Path) -> None:
    podman = 'case "$1" in build) exit 1 ;; *) exit 0 ;; esac\n'
    result = smoke(tools(tmp_path, "date", podman=podman))
    assert result.returncode == 1
    assert "container-smoke: FAILED: podman build failed" in result.stdout


@pytest.mark.parametrize(
    "needed",
    [
        "ARG BASE=python:3.12-slim",
        "FROM ${BASE}",
        "USER seedbot",
        "SEED_BOT_HTTP__LISTEN=0.0.0.0:9464",
        "HEALTHCHECK",
        "/healthz",
        'ENTRYPOINT ["seed-bot"]',
    ],
)
def test_the_containerfile_has(needed: str) -> None:
    assert needed in (ROOT / "Containerfile").read_text(encoding="utf-8")


def test_the_container_goes_with_its_volume(tmp_path: Path) -> None:
    """The run ends (here: the container stops at once) with ``podman rm -f -v``: the
    anonymous volume of the image's ``VOLUME /data`` is not left behind, run after run."""
    calls = tmp_path / "calls"
    podman = (
        f'echo "$*" >> {calls}\n'
        'case "$1 $2" in\n'
        '  "image inspect") echo "/healthz 334000000" ;;\n'
        '  "inspect --format") echo false ;;\n'
        "esac\n"
        "exit 0\n"
    )
    result = smoke(tools(tmp_path, "date", "awk", "seq", "cut", "python3", podman=podman))
    assert result.returncode == 1
    assert "container-smoke: FAILED: the container stopped" in result.stdout
    removed = [line for line in calls.read_text().splitlines() if line.startswith("rm ")]
    assert len(removed) == 1
    assert removed[0].startswith("rm -f -v seed-bot-smoke-")


def test_the_offline_base_drops_apt_caches_and_lists() -> None:
    script = SCRIPT.read_text(encoding="utf-8")
    assert '"$root"/var/cache/apt/archives/*.deb' in script
    assert '"$root"/var/lib/apt/lists/*' in script
