"""provenance: watermarks, signed C2PA manifests, verification; usable without sdkit."""
