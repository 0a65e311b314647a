FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends build-essential git curl && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . .
# torch's CPU wheel comes from the PyTorch CPU index inside images (the host's on-disk wheel is not there).
ENV PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN scripts/bootstrap.sh
EXPOSE 8000
