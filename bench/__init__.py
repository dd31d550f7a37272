"""Benchmarks: bootstrapperd against the reference servers in the same network-namespace lab.

Benchmarks are not tests: they print ratios and never fail on speed. See bench/README.md.
"""
