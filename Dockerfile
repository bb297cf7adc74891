# seqinv: CPU image by default; CUDA with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124
#   docker build -t seqinv .
#   docker run --rm -v "$PWD:/data" seqinv segment /data/sub-01_T1w.nii.gz -o /data/out
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 HF_HUB_DISABLE_TELEMETRY=1

WORKDIR /opt/seqinv
# torch first, from the chosen index (CPU wheels are ~5x smaller than the default CUDA ones)
RUN pip install --index-url "${TORCH_INDEX}" torch
COPY pyproject.toml README.md ./
COPY seqinv ./seqinv
COPY training ./training
RUN pip install ".[train]" && seqinv --version

WORKDIR /data
ENTRYPOINT ["seqinv"]
CMD ["--help"]
