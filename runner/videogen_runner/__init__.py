"""videogen runner: one Wan2.2 generation, from a request to an MP4 in S3."""
