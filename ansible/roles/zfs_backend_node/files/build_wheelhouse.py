#!/usr/bin/env python3
"""Build a wheelhouse for offline installs on storage nodes (run on the controller by the role).

The project's wheel is built from a clean copy of the checkout, offline (``--no-build-isolation``:
setuptools and wheel come with the project's ``deploy`` extra), and reproducibly (``SOURCE_DATE_EPOCH``),
so the same source gives the same bytes and the role reinstalls a node only when the code changed. Its
dependencies are fetched as wheels once per set of requirements (a stamp file). All wheels go into one
reproducible ``wheelhouse.tar``. Prints one JSON line: the project's wheel, the archive, the archive's
SHA-256 and the Python version it was built for.

    build_wheelhouse.py --source CHECKOUT --out DIR
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

COPY = ("pyproject.toml", "README.md", "LICENSE", "zfs_backend")
EPOCH = "315532800"  # 1980-01-01, the earliest a zip can hold


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pip(*args: str) -> None:
    env = dict(os.environ, SOURCE_DATE_EPOCH=EPOCH, PIP_DISABLE_PIP_VERSION_CHECK="1")
    res = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        sys.exit(f"build_wheelhouse: pip {args[0]} failed: {(res.stderr or res.stdout).strip()[-2000:]}")


def write_archive(out: Path) -> Path:
    """Every wheel in one reproducible tar (sorted, no times or owners): one file to copy to a node."""
    archive = out / "wheelhouse.tar"
    tmp = out / ".wheelhouse.tar.tmp"
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for whl in sorted(out.glob("*.whl")):
            info = tar.gettarinfo(str(whl), arcname=whl.name)
            info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 0, 0, 0, "root", "root", 0o644
            with open(whl, "rb") as f:
                tar.addfile(info, f)
    if archive.is_file() and sha256(archive) == sha256(tmp):
        tmp.unlink()
    else:
        tmp.replace(archive)
    return archive


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    a = ap.parse_args()
    src, out = a.source.resolve(), a.out.resolve()
    if not (src / "pyproject.toml").is_file():
        sys.exit(f"build_wheelhouse: {src} is not a zfs_backend checkout (no pyproject.toml)")
    out.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".{out.name}.build"
    shutil.rmtree(work, ignore_errors=True)
    tree = work / "src"
    tree.mkdir(parents=True)
    for name in COPY:
        p = src / name
        if p.is_dir():
            shutil.copytree(p, tree / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif p.is_file():
            shutil.copy2(p, tree / name)
    pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(work / "dist"), str(tree))
    (built,) = (work / "dist").glob("zfs_backend-*.whl")
    with zipfile.ZipFile(built) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        reqs = sorted(
            line.split(":", 1)[1].strip()
            for line in z.read(meta).decode().splitlines()
            if line.startswith("Requires-Dist:") and "extra ==" not in line
        )
    stamp = out / ".requirements"
    if not stamp.is_file() or stamp.read_text() != "\n".join(reqs):
        pip("wheel", "-q", "-w", str(out), *reqs)
        stamp.write_text("\n".join(reqs))
    target = out / built.name
    if not target.is_file() or sha256(target) != sha256(built):
        for old in out.glob("zfs_backend-*.whl"):
            old.unlink()
        shutil.move(str(built), target)
    shutil.rmtree(work, ignore_errors=True)
    archive = write_archive(out)
    py = f"{sys.version_info[0]}.{sys.version_info[1]}"
    print(json.dumps({"wheel": target.name, "archive": archive.name, "sha256": sha256(archive), "python": py}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
