"""DNS: local authority (zones, fixed records, live hosts), forwarding with a cache, and the
asyncio UDP/TCP endpoints on port 53. dnslib is the codec; the hot path for local names
answers from precomputed wire-format responses."""
