# bridging_tf, CPU image: every KFP task of `python -m pipelines.run --runner=kfp` runs in it.
#   docker build -t REGISTRY/bridging-tf:TAG .
#   docker run --rm REGISTRY/bridging-tf:TAG --method=end --scale=smoke --output_dir=/tmp/run
# TensorFlow comes from setup.cfg's pin (tensorflow==2.21.0); the install line is the README's
# (tests/test_dockerfiles.py checks both).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . /app
RUN pip install -e '.[test]'

# KFP replaces the entry point with its executor (python3 -m kfp.dsl.executor_main).
ENTRYPOINT ["python", "-m", "pipelines.run"]
CMD ["--help"]
