"""DCGAN-style VAE and WAE-MMD baselines (WAE authors' MNIST setup): plain PyTorch."""
