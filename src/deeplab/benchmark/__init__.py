"""``deeplab benchmark``: inference paths measured side by side in one process and one run.

- ``peaks.py``: the machine's own fp32 / bf16 convolution and int8 matmul rates, the ceiling each path is held to;
- ``measure.py``: round-robin timing of the paths (drifting load hits all alike), FLOPs, label agreement
  with fp32 eager on a real photo;
- ``report.py``: the table, the JSON and the bar chart.
"""
