"""Data: reading images and label maps safely; datasets and transforms."""
