"""Documents, corpus readers, the train/val split, token shards and the training loader."""
