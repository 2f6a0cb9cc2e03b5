#!/bin/bash
# The baseline of `make bench`: the deploy script users run today (the seed's CD plan, stage 2b:
# "SSH to staging -> pull + restart"), with its names and paths adapted to the example app.
# bench/run.py copies it onto a bench server and runs it there as root:
#   naive-deploy.sh <image>
# The only change that favours it: the SQLite database lives in a host directory mounted at
# /data (the seed keeps it inside the container, so every deploy there also loses all data).
set -euo pipefail

IMAGE=${1:?usage: naive-deploy.sh <image>}
NAME=${NAIVE_NAME:-todo-naive}
PORT=${NAIVE_PORT:-8888}
ENV_FILE=${NAIVE_ENV_FILE:-/opt/todo/todo.env}
DATA_DIR=${NAIVE_DATA_DIR:-/opt/todo-naive/data}
STATIC_ROOT=${NAIVE_STATIC_ROOT:-/var/www/todo/static}

echo "==> Pulling latest image..."
docker pull "$IMAGE"

echo "==> Stopping old container..."
docker stop "$NAME" 2>/dev/null || true
docker rm "$NAME" 2>/dev/null || true

echo "==> Starting new container..."
docker run -d --name "$NAME" \
  --env-file "$ENV_FILE" \
  -v "$DATA_DIR:/data" \
  -p "127.0.0.1:$PORT:8000" \
  "$IMAGE"

echo "==> Running migrations..."
docker exec "$NAME" python manage.py migrate --noinput

echo "==> Copying static files..."
docker cp "$NAME:/app/static/." "$STATIC_ROOT/"

echo "==> Deploy complete."
