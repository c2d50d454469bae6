"""Contrastive methods, one module each; the module name is the method name (see ``ssl.config.METHODS``)."""
