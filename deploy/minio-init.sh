#!/bin/sh
# The S3 store of deploy/compose.yaml, made ready once (run by the minio-init service; every
# step may run again): the bucket, encrypted by default (SSE-S3 with MINIO_KMS_SECRET_KEY),
# and the app's own user, whose policy allows that bucket only (minio-policy.json).
set -eu
mc alias set store http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing "store/$MRIMASTER_BUCKET"
mc encrypt set sse-s3 "store/$MRIMASTER_BUCKET"
mc admin user add store "$MRIMASTER_S3_ACCESS_KEY" "$MRIMASTER_S3_SECRET_KEY"
mc admin policy create store mrimaster-store /init/minio-policy.json
case "$(mc admin user info store "$MRIMASTER_S3_ACCESS_KEY")" in
    *mrimaster-store*) ;;
    *) mc admin policy attach store mrimaster-store --user "$MRIMASTER_S3_ACCESS_KEY" ;;
esac
echo "bucket $MRIMASTER_BUCKET and user $MRIMASTER_S3_ACCESS_KEY ready"
