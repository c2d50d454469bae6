"""Attacks, one module each (registered in ``poison.config.ATTACKS``)."""
