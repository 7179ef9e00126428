# ltx2 RunPod serverless worker: python -m ltx2cli.worker.handler, models read from the network volume.
#
#   docker build -t ltx2-worker .
#
# Base: python:3.11-slim, not nvidia/cuda. PyPI's Linux torch wheels carry the CUDA runtime, cuBLAS, cuDNN and
# NCCL as nvidia-* wheels and load those, never a system CUDA; the NVIDIA container runtime mounts the host's
# driver (libcuda) into any image. A CUDA base would add gigabytes of libraries nothing here loads. PyAV and
# soundfile wheels bundle FFmpeg (with libx264) and libsndfile, so no apt packages are needed either.
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    LTX2_MODEL_DIR=/runpod-volume/ltx2 \
    LTX2_CACHE_DIR=/tmp/ltx2

WORKDIR /app

# Dependencies first (one big layer, rebuilt only when constraints.txt changes), then the project.
COPY constraints.txt ./
COPY docker/install.sh docker/install.sh
RUN docker/install.sh deps

COPY pyproject.toml README.md ./
COPY configs ./configs
COPY ltx2cli ./ltx2cli
RUN docker/install.sh project \
    && useradd --create-home --uid 1000 --user-group ltx2

# No credentials in the image: GOOGLE_APPLICATION_CREDENTIALS (or a secret holding the key) comes from the endpoint.
# Models come from the volume, read-only: its files must be readable by uid 1000.
USER 1000:1000
ENTRYPOINT ["python", "-m", "ltx2cli.worker.handler"]
CMD []
