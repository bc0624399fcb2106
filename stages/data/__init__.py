"""Data layer: raw sources -> clean compact tables -> leave-one-out splits (and training examples).

`sources/` has one reader per raw format, each returning a `bundle.RawBundle`; `clean` drops
duplicates, applies the k-core and compacts ids; `split` does leave-one-out for interactions and
the friend graph; `synthetic` generates a seeded dataset with sequential and social structure.
"""
