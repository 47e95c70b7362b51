"""Pieces every ML Studio service is built from; no service logic lives here."""
