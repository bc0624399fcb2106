"""gdr — generative recommendation with discrete diffusion.

`gdr_cli` holds the Typer app and the plumbing every stage shares: configuration,
manifests, data-root paths, atomic I/O, console and errors. Importing it is cheap
(no torch, no polars); the heavy work lives in `stages`.
"""

__version__ = "0.1.0"
