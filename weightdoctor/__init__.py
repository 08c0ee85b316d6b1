"""weightdoctor: a command-line doctor for PyTorch and Hugging Face model checkpoints."""

__version__ = "0.1.0"
