"""Container images without a Docker daemon, over the registry HTTP API v2.

``bootstrapperd-pack`` pulls the cluster's images (``client``) into archives under
``bsroot/images/`` (``archive``); ``bootstrapperd serve`` pushes them into the bootstrapper's
own registry at ``<dockerdomain>:5000`` (``push``), under the names ``reference`` gives them.

The submodules are imported where used (``bootstrapperd.oci.client`` etc.); nothing is
re-exported here, so importing this package pulls in neither aiohttp nor the pack code.
"""
