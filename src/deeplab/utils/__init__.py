"""Small utilities every layer may use: crash-safe file writes (``files``) and the helpers of runs launched by
``torchrun`` (``distributed``). Nothing here imports the rest of the package."""
