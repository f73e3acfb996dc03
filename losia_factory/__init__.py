"""losia-factory: LoSiA and LoSiA-Pro fine-tuning for PyTorch and LLaMA-Factory."""

__version__ = "0.1.0"
