"""mgr-batch: tag whole music catalogs with genres on Ray Data; train genre models on Ray Train."""

__version__ = "0.1.0"
