"""Image embeddings (ResNet18) for the lake's `embeddings` table: the model and image pipeline live here."""
