"""realfake: the Real-Fake training-data synthesis method (ICLR 2024) as importable stages.

Each stage module (``realfake.<stage>``) holds pure functions plus a ``main(argv=None)`` CLI;
the Snakemake rules in ``rules/`` only wire files to those CLIs.
"""

__version__ = "0.1.0"
