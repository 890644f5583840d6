"""sdkit: text-to-image diffusion in which every image carries its own provenance."""
