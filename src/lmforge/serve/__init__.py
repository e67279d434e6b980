"""Generation: sampling and the decode loop (the serving engine builds on these)."""
