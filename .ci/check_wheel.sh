#!/usr/bin/env bash
# The wheel installs the import package `poincare` (with `poincare.nn`) and nothing else.
#
# 1. Builds the wheel from a clean copy of the checkout (git's tracked and unignored files, so
#    that a stale build/ or *.egg-info cannot leak into it) with `pip wheel --no-deps`.
# 2. Inspects it: every path of the zip and of its RECORD lies under poincare/ or its
#    *.dist-info/, top_level.txt (if present) says `poincare` only, and poincare/__init__.py,
#    poincare/nn/__init__.py and poincare/py.typed are there.
# 3. Installs torch==2.13.0 (the local CPU build, timed) and then the wheel into a fresh
#    virtual environment, and from a folder holding a user's own `models` package checks that
#    `poincare` and `poincare.nn` import from that environment, that `import models` gives the
#    user's package, and that `training`, `verification`, `benchmarks` and `train_cli` are absent.
#
# Run alone with `bash .ci/check_wheel.sh` (PYTHON=... picks the interpreter; default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
py=${PYTHON:-python3}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/check_wheel.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/src" "$tmp/dist" "$tmp/user"

echo "-- clean copy of the sources"
if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # Tracked and untracked-but-not-ignored files that exist (a file deleted in the work tree
    # but still in the index is skipped).
    git -C "$root" ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do
            if [ -f "$f" ]; then printf '%s\0' "$f"; fi
        done \
        | tar --null -T - -cf - | tar -xf - -C "$tmp/src"
else
    tar --exclude=./.git --exclude=./.venv --exclude=./.ci-venv --exclude=./build \
        --exclude=./dist --exclude='*.egg-info' --exclude=__pycache__ -cf - . \
        | tar -xf - -C "$tmp/src"
fi

echo "-- build the wheel"
"$py" -m pip wheel --no-deps --disable-pip-version-check -q -w "$tmp/dist" "$tmp/src"
shopt -s nullglob
wheels=("$tmp"/dist/*.whl)
shopt -u nullglob
if [ "${#wheels[@]}" -ne 1 ]; then
    echo "check_wheel: expected one wheel, found ${#wheels[@]}" >&2
    exit 1
fi
wheel=${wheels[0]}
echo "built $(basename "$wheel")"

echo "-- inspect the wheel"
"$py" - "$wheel" <<'PY'
import csv
import io
import sys
import zipfile

path = sys.argv[1]
with zipfile.ZipFile(path) as z:
    names = [n for n in z.namelist() if not n.endswith("/")]
    dist_infos = {n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")}
    if len(dist_infos) != 1:
        sys.exit(f"check_wheel: expected one .dist-info folder, found {sorted(dist_infos)}")
    (dist_info,) = dist_infos
    record = [row[0] for row in csv.reader(io.TextIOWrapper(z.open(f"{dist_info}/RECORD")))]
    top_level = None
    if f"{dist_info}/top_level.txt" in names:
        top_level = z.read(f"{dist_info}/top_level.txt").decode().split()

problems = []
allowed = ("poincare/", f"{dist_info}/")
for what, paths in (("zip", names), ("RECORD", record)):
    stray = sorted(p for p in paths if not p.startswith(allowed))
    if stray:
        problems.append(f"{what} holds files outside poincare/: {stray}")
    cache = sorted(p for p in paths if "__pycache__/" in p or p.endswith(".pyc"))
    if cache:
        problems.append(f"{what} holds compiled files: {cache}")
if sorted(record) != sorted(names):
    problems.append(
        f"RECORD and the zip differ: {sorted(set(record) ^ set(names))}"
    )
if top_level is not None and top_level != ["poincare"]:
    problems.append(f"top_level.txt lists {top_level}, not ['poincare']")
for required in ("poincare/__init__.py", "poincare/nn/__init__.py", "poincare/py.typed", "poincare/csrc/lorentz_attention.cpp"):
    if required not in names:
        problems.append(f"{required} is missing")
print(f"RECORD of {path.rsplit('/', 1)[-1]} ({len(record)} files):")
for p in record:
    print(f"  {p}")
print(f"top_level.txt: {top_level if top_level is not None else '(absent)'}")
if problems:
    for p in problems:
        print(f"check_wheel: {p}", file=sys.stderr)
    sys.exit(1)
print("the wheel ships the import package poincare only")
PY

echo "-- install into a fresh virtual environment"
"$py" -m venv "$tmp/venv"
vpy="$tmp/venv/bin/python"
start=$SECONDS
# The local CPU build first, so that the wheel's torch>=2.1,<3 is already satisfied.
"$vpy" -m pip install --disable-pip-version-check -q torch==2.13.0
echo "torch==2.13.0 installed in the fresh venv in $((SECONDS - start)) s"
start=$SECONDS
"$vpy" -m pip install --disable-pip-version-check -q "$wheel"
echo "the wheel installed in $((SECONDS - start)) s"

echo "-- import from a folder with a user's own models package"
mkdir "$tmp/user/models"
printf 'MARKER = "user"\n' >"$tmp/user/models/__init__.py"
(
    cd "$tmp/user"
    env -u PYTHONPATH -u PYTHONHOME PYTHONNOUSERSITE=1 "$vpy" -W ignore - "$tmp/venv" <<'PY'
import importlib.resources
import importlib.util
import os
import sys

venv = os.path.realpath(sys.argv[1])
import poincare
import poincare.nn

problems = []
for mod in (poincare, poincare.nn):
    where = os.path.realpath(mod.__file__ or "")
    if not where.startswith(venv + os.sep):
        problems.append(f"{mod.__name__} imported from {where}, not from the fresh venv")
if not importlib.resources.files("poincare").joinpath("py.typed").is_file():
    problems.append("poincare/py.typed is not installed")
import models

if getattr(models, "MARKER", None) != "user":
    problems.append(f"import models gave {models.__file__}, not the user's package")
for name in ("training", "verification", "benchmarks", "train_cli"):
    if importlib.util.find_spec(name) is not None:
        problems.append(f"{name} is importable: {importlib.util.find_spec(name).origin}")
if problems:
    sys.exit("check_wheel: " + "; ".join(problems))
print(
    f"poincare {poincare.__version__} and poincare.nn import from the fresh venv; "
    "models is the user's; training, verification, benchmarks, train_cli are absent"
)
PY
)
echo "check_wheel: ok"
