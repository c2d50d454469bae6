"""Data: file collections, the offline demo world, poisoned pre-training sets."""
