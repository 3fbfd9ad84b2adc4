"""Image-side helpers of ``diffinv solve``: PNG/.npy I/O, quality metrics, output panels."""
