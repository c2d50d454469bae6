"""Small shared helpers: safe image I/O, atomic outputs, config loading."""
