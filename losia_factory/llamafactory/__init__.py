"""LLaMA-Factory integration: ``finetuning_type: losia`` / ``pilora`` through an import hook (no fork, no edits).

Only this subpackage knows LLaMA-Factory's internals. ``patches.PATCHED_SYMBOLS`` lists every symbol it replaces;
each method is one description in :mod:`.methods`, and the patched code loops over the registered descriptions.
"""
