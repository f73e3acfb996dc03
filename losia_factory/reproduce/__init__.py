"""Reproduce the LoSiA and PiLoRA papers' experiments: settings, recipes, data, evaluation, tables."""
