"""ML half of qdgan: pix2pix cGANs (U-Net generator, PatchGAN discriminator) and their metrics."""
