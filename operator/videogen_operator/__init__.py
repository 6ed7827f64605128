"""videogen operator: VideoGeneration resources become GPU Jobs running the runner."""
