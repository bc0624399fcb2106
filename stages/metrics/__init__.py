"""Ranking metrics (PROTOCOL.md §1), paired bootstrap intervals and tests over users, comparison reports."""
