"""The bsroot directory and what is in it: its layout, ``manifest.json``, the image mirror under
``html/static`` and the cluster's PKI under ``tls/``."""
