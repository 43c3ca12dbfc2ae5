#!/usr/bin/env python3
"""Build a wheelhouse for offline installs on storage nodes (run on the controller by the role).

The project's wheel is built from a clean copy of the checkout, offline (``--no-build-isolation``:
setuptools and wheel come with the project's ``deploy`` extra), and reproducibly (``SOURCE_DATE_EPOCH``),
so the same source gives the same bytes and the role reinstalls a node only when the code changed. Its
dependencies are fetched as wheels once per set of requirements (a stamp file). All wheels go into one
reproducible ``wheelhouse.tar``. Prints one JSON line: the project's wheel, the archive, the archive's
SHA-256 and the Python version it was built for.

The dependencies are resolved by the controller's Python, but the nodes may run another patch release
(the lab's nodes run Debian's 3.11.2, the controller a 3.11.7): a requirement whose marker holds only on
the nodes (``async-timeout; python_full_version < "3.11.3"``, from redis) would be missing there, and an
offline ``pip install`` fails. ``--target-python 3.11.2[,...]`` evaluates every wheel's requirements for
those versions too and adds what they need, until nothing is missing.

    build_wheelhouse.py --source CHECKOUT --out DIR [--target-python X.Y.Z[,X.Y.Z...]]
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
MAX_ROUNDS = 10
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


def _name(text: str) -> str:
    return text.lower().replace("_", "-").replace(".", "-")


def wheels_metadata(out: Path) -> dict[str, list[str]]:
    """Each wheel's distribution name -> its Requires-Dist lines."""
    found: dict[str, list[str]] = {}
    for whl in out.glob("*.whl"):
        with zipfile.ZipFile(whl) as z:
            meta = next((n for n in z.namelist() if n.endswith(".dist-info/METADATA")), None)
            if meta is None:
                continue
            lines = z.read(meta).decode(errors="replace").splitlines()
        name = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Name:")), whl.name)
        found[_name(name)] = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Requires-Dist:")]
    return found


def missing_for(out: Path, versions: list[str]) -> list[str]:
    """Requirements of the wheels in ``out`` that hold on one of ``versions`` and have no wheel there."""
    from packaging.requirements import Requirement

    have = wheels_metadata(out)
    missing: set[str] = set()
    for reqs in have.values():
        for line in reqs:
            req = Requirement(line)
            if _name(req.name) in have or req.marker is None:
                continue  # present, or needed everywhere (then the controller's resolution has it)
            for v in versions:
                env = {"python_full_version": v, "python_version": ".".join(v.split(".")[:2]), "extra": ""}
                if req.marker.evaluate(env):
                    missing.add(str(req).split(";")[0].strip())
    return sorted(missing)


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
    ap.add_argument("--target-python", default="", help="the nodes' Python versions X.Y.Z, comma-separated")
    a = ap.parse_args()
    targets = sorted({v.strip() for v in a.target_python.split(",") if v.strip()})
    for v in targets:
        if not all(part.isdigit() for part in v.split(".")) or len(v.split(".")) != 3:
            sys.exit(f"build_wheelhouse: --target-python {v!r}: expected X.Y.Z")
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
    want = "\n".join([*reqs, *(f"# python {v}" for v in targets)])
    if not stamp.is_file() or stamp.read_text() != want:
        pip("wheel", "-q", "-w", str(out), *reqs)
        for _ in range(MAX_ROUNDS):
            extra = missing_for(out, targets)
            if not extra:
                break
            pip("wheel", "-q", "-w", str(out), *extra)
        else:
            sys.exit(f"build_wheelhouse: the requirements of Python {', '.join(targets)} do not settle")
        stamp.write_text(want)
    target = out / built.name
    if not target.is_file() or sha256(target) != sha256(built):
        for old in out.glob("zfs_backend-*.whl"):
            old.unlink()
        shutil.move(str(built), target)
    shutil.rmtree(work, ignore_errors=True)
    archive = write_archive(out)
    py = f"{sys.version_info[0]}.{sys.version_info[1]}"
    report = {"wheel": target.name, "archive": archive.name, "sha256": sha256(archive), "python": py}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
