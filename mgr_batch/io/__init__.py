"""Bytes in and out: storage and listings, audio decoding, table schemas, writing and reading the output tables."""
