"""Running a validator: its settings, its logs and what it reports about itself.

    config          the validator's settings: where things are, never how a verdict is reached
    logging_setup   stdlib logging for the long-running commands
    metrics         what a running validator knows about itself, for Prometheus
"""
