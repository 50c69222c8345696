"""Batch-in, batch-out stages of the tagging and training graphs: plain Python over numpy batches, no Ray."""
