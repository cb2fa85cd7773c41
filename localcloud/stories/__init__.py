"""What people run: the demo, the playground, the flow deployer replaces, latency breakdowns."""
