"""Training data for embedded priors: image folders and built-in data sets from Debian packages."""

from diffinv.data.base import ImageData, batch_to_network, load_dataset

__all__ = ["ImageData", "batch_to_network", "load_dataset"]
