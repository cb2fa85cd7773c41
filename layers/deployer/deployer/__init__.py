"""Push-to-deploy core: models, rollout decisions and AWS adapters."""
