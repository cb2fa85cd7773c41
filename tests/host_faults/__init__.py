"""The host fault suite (`make host-faults`): docs/agent.md, "Host faults"."""
