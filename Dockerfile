# The repo2docker operator image.
#
#   tools/operator-image.sh [TAG] [BASE_IMAGE]   # prepares wheels, then docker build
#
# Python packages come from wheels prepared on the build host in build/operator-wheels, so
# the image builds where containers cannot reach PyPI (and is reproducible where they can).
# BASE_IMAGE must provide python3 (with venv) matching the wheels' Python, 3.11 by default.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
USER root
COPY build/operator-wheels /tmp/wheels
RUN python3 -m venv /opt/operator \
 && /opt/operator/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels \
      "$(ls /tmp/wheels/repo2dockerspawner-*.whl)[operator]" \
 && rm -rf /tmp/wheels \
 && (getent passwd 10001 >/dev/null || useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin r2d-operator)
ENV PATH=/opt/operator/bin:$PATH \
    PYTHONUNBUFFERED=1
# Non-root by default; the chart adds the Docker socket's group (docker.socketGroupId),
# or runs as root where that group is not known.
USER 10001
EXPOSE 8080 9090
ENTRYPOINT ["repo2docker-operator"]
