#!/bin/sh
# The container's entrypoint. SageMaker runs the image as `<image> serve` and expects
# GET /ping and POST /invocations on port 8080: with MRIMASTER_MODE=sagemaker, `serve` starts
# that server; otherwise `serve [ARGS]` is the doctors' web app on port 8000, ARGS passed on
# (`serve --no-worker` behind a proxy, beside `worker` containers). Any other arguments are
# passed to the mrimaster command (`worker`, `db upgrade`, `cleanup`, `train ...`).
set -eu
if [ "${1:-serve}" = "serve" ]; then
    [ "$#" -gt 0 ] && shift
    if [ "${MRIMASTER_MODE:-app}" = "sagemaker" ]; then
        exec mrimaster sagemaker --host "${MRIMASTER_HOST:-0.0.0.0}" --port "${MRIMASTER_PORT:-8080}"
    fi
    exec mrimaster serve --host "${MRIMASTER_HOST:-0.0.0.0}" --port "${MRIMASTER_PORT:-8000}" "$@"
fi
exec mrimaster "$@"
