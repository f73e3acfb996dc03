"""The quality harness: LoSiA, LoRA and full fine-tuning on a real pretrained model (SmolLM2-135M), on CPU."""
