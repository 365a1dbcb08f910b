"""Tests of :mod:`trionos.testing`, one module per module of the kit."""
