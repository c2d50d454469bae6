"""defend."""
