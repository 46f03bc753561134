"""runai-entry: a PID-1 supervisor for preemptible training jobs, and the library they use.

Importing this package costs nothing: the supervisor lives in submodules that the console script
imports, and the training-side library in :mod:`runai_entry.training`.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
