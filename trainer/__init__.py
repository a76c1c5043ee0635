"""seqtrain: production training jobs for recurrent sequence models."""

__version__ = "0.1.0"
