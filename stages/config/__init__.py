"""Pydantic configs of every stage: defaults and their explanations (also the `--help` text).

Torch-free on purpose: the CLI imports these to build its options.
"""
