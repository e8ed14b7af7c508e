"""The whole subnet on one machine: simulated chain, local buckets, reference miners, stand-ins."""
