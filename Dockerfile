FROM python:3.11-slim
WORKDIR /srv
COPY . .
RUN pip install --no-cache-dir . && useradd --system saga
USER saga
