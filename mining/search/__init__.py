"""From a flagged image to every one like it: the kNN and k-means backends, the vector
index (built, stored, kept in step with the embeddings), similar images and the reviewer
loop's classifier, narrowing sessions, near-duplicates and k-center picks.
Imports the core room only."""
