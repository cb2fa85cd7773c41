"""The host world: sandboxed hosts (own nginx, ports, nft table), the registry, test images, load."""
