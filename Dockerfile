# seqtrain training image: TensorFlow 2.21 with CUDA, seqtrain installed, runs as non-root.
#
#   docker build -t REGISTRY/seqtrain:VERSION .
#   docker run --rm --gpus all REGISTRY/seqtrain:VERSION train --help
#
# Every job spec under jobs/ runs this image with `train ...` as its args.
# No credentials are baked in: on GKE use Workload Identity, on Vertex AI the
# job's service account, locally mount a key and set GOOGLE_APPLICATION_CREDENTIALS.
FROM tensorflow/tensorflow:2.21.0-gpu

LABEL org.opencontainers.image.title="seqtrain" \
      org.opencontainers.image.description="Production training jobs for recurrent sequence models"

# Python: unbuffered logs (kubectl logs shows lines as they happen), no .pyc, no pip cache.
# TF_CPP_MIN_LOG_LEVEL=1 hides TF's INFO lines, keeps warnings and errors.
# GCS_*: TF's native gs:// filesystem (tsl gcs_file_system.cc). Its defaults let one stuck
# request block training for up to an hour (metadata/read/write: 3600 s); fail it in
# minutes instead and let the built-in exponential-backoff retry try again.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=1 \
    GCS_REQUEST_CONNECTION_TIMEOUT_SECS=60 \
    GCS_REQUEST_IDLE_TIMEOUT_SECS=60 \
    GCS_METADATA_REQUEST_TIMEOUT_SECS=120 \
    GCS_READ_REQUEST_TIMEOUT_SECS=300 \
    GCS_WRITE_REQUEST_TIMEOUT_SECS=900 \
    GCS_RETRY_CONFIG_MAX_RETRIES=10

# The base image already has tensorflow==2.21.0 built with CUDA; the `gpu` extra must
# pin that same version so pip keeps it instead of installing a second TensorFlow.
WORKDIR /opt/seqtrain/src
COPY . .
RUN python3 -m pip install --no-cache-dir "./[gpu]" \
    && seqtrain --help > /dev/null

# A fixed numeric UID, so Kubernetes can check `runAsNonRoot: true` against the image.
RUN groupadd --gid 10001 seqtrain \
    && useradd --uid 10001 --gid 10001 --no-log-init --create-home --shell /usr/sbin/nologin seqtrain
USER 10001:10001
WORKDIR /home/seqtrain

ENTRYPOINT ["seqtrain"]
CMD ["--help"]
