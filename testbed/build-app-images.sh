#!/usr/bin/env bash
# Build the example app images greenlight/todo:<variant> (v1 v2 bad-health bad-migration).
#   testbed/build-app-images.sh              # all variants
#   testbed/build-app-images.sh v1 v2        # only these
# 1. Downloads the pinned wheels on the host into examples/django-app/wheels/ (containers cannot
#    reach PyPI over HTTPS); skipped when the directory already satisfies requirements.txt.
# 2. Builds each variant with --build-arg RELEASE=<variant> --build-arg VARIANT=<variant>,
#    reusing the Docker build cache (a second run takes seconds).
# Does not push: the test bed pushes to the registry.
# Env: PYTHON (host python for pip, default python3), APP_IMAGE (default greenlight/todo),
#      BASE_IMAGE_SCRIPT (default testbed/base-image.sh, run when debian:bookworm-slim is missing).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
app="$repo/examples/django-app"
wheels="$app/wheels"
image="${APP_IMAGE:-greenlight/todo}"
python="${PYTHON:-python3}"
all_variants=(v1 v2 bad-health bad-migration)

die() { echo "build-app-images: ERROR: $*" >&2; exit 1; }
log() { echo "build-app-images: $*"; }

variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=("${all_variants[@]}")
for v in "${variants[@]}"; do
  [ -d "$app/variants/$v" ] || die "unknown variant '$v' (no $app/variants/$v/); known: ${all_variants[*]}"
done

command -v docker >/dev/null || die "docker CLI not found"
docker info >/dev/null 2>&1 || die "cannot talk to the Docker engine (docker info failed)"

# --- base image --------------------------------------------------------------------------
if ! docker image inspect debian:bookworm-slim >/dev/null 2>&1; then
  log "debian:bookworm-slim missing, creating it"
  bash "${BASE_IMAGE_SCRIPT:-$repo/testbed/base-image.sh}" || die "could not create debian:bookworm-slim"
fi

# --- wheels ------------------------------------------------------------------------------
# Satisfied when every pinned name==version in requirements.txt has a wheel in $wheels.
wheels_ok() {
  "$python" - "$app/requirements.txt" "$wheels" <<'PY'
import pathlib, re, sys
req, wdir = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
norm = lambda s: re.sub(r"[-_.]+", "_", s).lower()
have = {(norm(p.name.split("-")[0]), p.name.split("-")[1]) for p in wdir.glob("*.whl")} if wdir.is_dir() else set()
for line in req.read_text().splitlines():
    line = line.split("#")[0].strip()
    if not line:
        continue
    m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^\s;]+)", line)
    if not m or (norm(m[1]), m[2]) not in have:
        sys.exit(1)
PY
}

if wheels_ok; then
  log "wheels up to date in $wheels"
else
  log "downloading wheels into $wheels"
  mkdir -p "$wheels"
  # Wheels for Debian 12's CPython 3.11 on x86_64, whatever the host's own Python is.
  "$python" -m pip download --quiet --disable-pip-version-check \
      --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 \
      --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform any \
      -r "$app/requirements.txt" -d "$wheels" \
    || die "pip download failed (is PyPI reachable from the host?)"
  wheels_ok || die "wheels in $wheels still do not satisfy requirements.txt"
fi

# --- images ------------------------------------------------------------------------------
# Classic builder unless the caller chose otherwise: the buildx plugin may be missing, and the
# Dockerfile needs no BuildKit features.
export DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-0}"
for v in "${variants[@]}"; do
  start=$(date +%s)
  log "building $image:$v"
  if ! out=$(docker build --build-arg "RELEASE=$v" --build-arg "VARIANT=$v" -t "$image:$v" "$app" 2>&1); then
    echo "$out" | tail -n 40 >&2
    die "docker build of $image:$v failed"
  fi
  log "built $image:$v in $(( $(date +%s) - start ))s ($(docker image inspect -f '{{.Size}}' "$image:$v" | awk '{printf "%.0f MB", $1/1e6}'))"
done
