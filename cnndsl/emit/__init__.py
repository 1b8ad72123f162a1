"""Emitters: artifacts made from a checked network (`cnndsl compile --emit TARGET`)."""
