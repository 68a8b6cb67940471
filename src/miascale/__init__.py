"""miascale: membership-inference vulnerability of fine-tuned classifiers, measured and predicted."""

__version__ = "0.1.0"
