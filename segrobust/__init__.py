"""segrobust: robustness of semantic segmentation to rain and adversarial attacks."""

__version__ = "0.1.0"
