"""Clips to features: the registry of feature kinds, spectral features, the classic vector, pre-trained embeddings."""
