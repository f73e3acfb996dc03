"""LLaMA-Factory integration: ``finetuning_type: losia`` through an import hook (no fork, no edited files).

Only this subpackage knows LLaMA-Factory's internals. ``patches.PATCHED_SYMBOLS`` lists every symbol it replaces.
"""
