# recon: the Gradio app in a container.
#   docker build -t recon .
#   docker run --rm -p 7860:7860 recon               # CPU
#   docker run --rm -p 7860:7860 --gpus all recon    # GPU (needs the NVIDIA Container Toolkit on the host)
# One image for both: torch 2.11.0 from PyPI is the CUDA build and brings its own CUDA runtime, so it
# uses a GPU when the container is given one and falls back to the CPU otherwise.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860

# Non-root user with uid 1000 (what Hugging Face Spaces expect); its home holds the app and the caches.
RUN useradd --create-home --uid 1000 user
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH
WORKDIR /home/user/app

# Dependencies first, so that code changes do not reinstall them.
COPY --chown=user:user requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

COPY --chown=user:user app.py ./
COPY --chown=user:user recon ./recon
COPY --chown=user:user assets ./assets

USER user
EXPOSE 7860

# Plain Python (no curl in the slim image): healthy when the page answers.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/', timeout=8)"]

CMD ["python", "app.py"]
