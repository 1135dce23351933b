"""aecfe: cross-domain white blood cell classification.

See the README for the data flow; ``from aecfe import ...`` gives the public API.
"""
__version__ = "0.1.0"
