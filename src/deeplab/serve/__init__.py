"""``deeplab serve``: the model behind an HTTP API and a web page (FastAPI on uvicorn; ``pip install
'deeplab[serve]'``).

- ``settings.py``: ``ServeSettings`` — the operator's limits (body size, pixels, batching, queue, test-time
  options, video length);
- ``batcher.py``: ``MicroBatcher`` — requests of equal image size and options batched (never padded), a bounded
  queue that answers 503 + Retry-After when full, inference on its own thread;
- ``codec.py``: request bodies to images (size cap counted as the bytes stream, pixel cap from the header,
  400/413/415 with the reason) and predictions to PNG / overlay / JSON (Hugging Face's label-score-mask shape);
- ``telemetry.py``: Prometheus metrics (requests by status, latency, queue depth, batch sizes);
- ``app.py``: the FastAPI application (``/v1/segment``, ``/v1/model``, ``/healthz``, ``/readyz``, ``/metrics``,
  and the page at ``/``, ``static/index.html``);
- ``launcher.py``: ``ServerProcess`` — the server as a child process on a loopback port (tests, load benchmark).
"""
