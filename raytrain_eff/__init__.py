"""raytrain_eff: efficient-training methods on Ray Train, tuned with Ray Tune, watched in Grafana."""
__version__ = "0.1.0"
