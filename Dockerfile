# ltx2 worker image. PyPI's Linux torch wheels carry the CUDA runtime; the host supplies the driver.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY ltx2cli ./ltx2cli
COPY configs ./configs
RUN python -m pip install 'torch==2.13.0' '.[runpod]'

# Models come from a mounted volume, never from the image.
ENTRYPOINT ["ltx2"]
CMD ["--help"]
