"""Item (and user) IDs as short token codes: `CodeSet` (codeset), embedding sources (text, collab,
social), quantisers (kmeans, rqvae), the method factory (methods), collision digits (collisions),
code-usage stats and plot (usage). `trie` (valid-code prefix tree) belongs to the decoding side.
"""
