"""Video: decode a file's frames (PyAV; ``pip install 'deeplab[video]'``), segment them in batches, optionally
smooth the class probabilities over time, and write an overlay video with the source's frame rate and size
(and, if asked, per-frame label PNGs).

- ``io.py``: ``read_frames`` (rotation metadata applied), ``VideoWriter``, ``probe``;
- ``segment.py``: ``segment_video``, ``TemporalSmoother``, and the flicker measure.
"""
