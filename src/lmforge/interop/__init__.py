"""Models in and out: GGUF files, Hugging Face directories, pullable models, chat templates."""
