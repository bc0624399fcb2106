"""Ranking metrics (PROTOCOL.md §1) and comparison reports."""
