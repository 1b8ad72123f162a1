"""Other frameworks: weights in (safetensors, PyTorch state dicts, Keras layouts)."""

#: The name and layout conventions `weights import --map` knows (here, not in `weights`, so that building
#: the command line imports no numpy).
MAPPINGS = ("auto", "torchvision", "timm", "torch", "keras")
