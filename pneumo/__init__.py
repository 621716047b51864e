"""pneumo: a reproducible deep-learning study of paediatric chest X-ray pneumonia."""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
