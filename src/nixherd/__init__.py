"""nixherd: deploy NixOS configurations to a fleet of machines over SSH."""

__version__ = "0.1.0"
