"""Other frameworks: weights in (safetensors, PyTorch state dicts, Keras layouts)."""
