# recon: the Gradio app in a container, ready to host in public.
#   docker build -t recon .
#   docker run --rm -p 7860:7860 --memory 8g recon                  # CPU
#   docker run --rm -p 7860:7860 --memory 16g --gpus all recon      # GPU (needs the NVIDIA Container Toolkit)
# One image for both: torch 2.11.0 from PyPI is the CUDA build and brings its own CUDA runtime, so it
# uses a GPU when the container is given one and falls back to the CPU otherwise.
#
# The base image is pinned to a Python patch release on Debian 12 and to its multi-platform manifest
# digest (`docker buildx imagetools inspect python:3.11.13-slim-bookworm` shows it), so every build
# starts from the same bytes.
FROM python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    RECON_RUN_MAX_SECONDS=900 \
    RECON_SESSION_TTL=900 \
    RECON_PAUSE_TIMEOUT=600

# Non-root user with uid 1000 (what Hugging Face Spaces expect). It owns only its home (caches and
# temporary files); the code belongs to root and is read-only to it.
RUN useradd --create-home --uid 1000 user
WORKDIR /opt/recon

# Dependencies first, so that code changes do not reinstall them; every version is pinned.
COPY requirements.txt ./
RUN pip install --no-cache-dir pip==25.2 && pip install --no-cache-dir -r requirements.txt

COPY app.py page.py liveplot.py ./
COPY recon ./recon
COPY assets ./assets
RUN chmod -R a-w /opt/recon

USER user
ENV HOME=/home/user
EXPOSE 7860

# Plain Python (no curl in the slim image): healthy when the page answers.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/', timeout=8)"]

CMD ["python", "app.py"]
