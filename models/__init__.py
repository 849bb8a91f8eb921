"""PIE and its invertible layers: plain PyTorch, no file I/O, no harness imports."""
