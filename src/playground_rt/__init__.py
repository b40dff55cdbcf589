"""playground-rt: a realtime server for an ML image-preprocessing playground."""
