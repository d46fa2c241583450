"""The live dashboard's figures: the gateway's own metrics registry, and the workers' lag."""
