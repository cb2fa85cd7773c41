"""Local cloud: development stand-ins (registry, host sandboxes, images, load) on loopback only."""
