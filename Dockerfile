# text2img_diffusion server: the web page at /, the HTTP API (docs at /docs), the bundled model.
#
#   docker build -t t2i .                  # python:3.11-slim, torch from pip's default index
#   docker run -p 8000:8000 t2i            # then open http://localhost:8000/
#
# TORCH_INDEX=URL installs torch from another wheel index (PyTorch's CPU-only or a CUDA-specific one; the URL is in
# PyTorch's install guide). A CUDA image (a base without Python gets one from apt):
#   docker build -t t2i-cuda --build-arg BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#                --build-arg TORCH_INDEX=URL_OF_THE_CU128_INDEX .
#   docker run --gpus all -p 8000:8000 t2i-cuda
#
# Settings are T2I_* environment variables (docker run -e T2I_MAX_BATCH=16 ...): T2I_MODEL (a pipeline folder,
# e.g. mounted with -v; default: the bundled model), T2I_DEVICE, T2I_MAX_BATCH, T2I_QUEUE_SIZE, T2I_TIMEOUT,
# T2I_THREADS, T2I_BATCH_INVARIANT (on: a batched image is bit for bit its seed alone) and the T2I_MAX_* limits
# (see text2img_diffusion/api.py).
#
# Install steps as in README.md: torch first, on its own, at the tested versions; then the package.
# NOTE: written without a Docker engine at hand, so never built: treat it as untested.
ARG BASE=python:3.11-slim
FROM ${BASE}
ARG TORCH_INDEX=

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH

RUN if ! python3 -m venv --help >/dev/null 2>&1; then \
        apt-get update && apt-get install -y --no-install-recommends python3 python3-venv && rm -rf /var/lib/apt/lists/*; \
    fi && python3 -m venv /opt/venv

RUN pip install ${TORCH_INDEX:+--index-url ${TORCH_INDEX}} torch==2.14.1 torchvision==0.29.1

WORKDIR /src
COPY settings.ini setup.py MANIFEST.in README.md ./
COPY text2img_diffusion ./text2img_diffusion
RUN pip install . && cd / && rm -rf /src \
 && python -c "from text2img_diffusion.core import BUNDLED_MODEL as m; print('bundled model:', m, 'present' if (m/'model_index.json').exists() else 'MISSING')"

RUN useradd --create-home --uid 10001 t2i
USER t2i
WORKDIR /home/t2i
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD python -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status != 200)"
# t2i serve, not plain uvicorn: it adds the read deadlines and connection limits (07_api, T2I_* variables)
CMD ["t2i", "serve", "--host", "0.0.0.0", "--port", "8000"]
