"""One Construct per logical unit; each exposes the resources it creates as attributes."""
