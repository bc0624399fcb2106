"""IDGenRec's textual IDs: a word tokenizer trained on the dataset's own text, a T5 that writes each
item's (or user's) ID as a short phrase, unique by construction, and the bridge through which the
recommender's loss trains the generator (soft IDs). `stages/train_gen.py` runs the rounds."""
