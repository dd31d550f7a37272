"""IPv6 router advertisements on the serving interface (the codec is ``protocols.ndp``)."""
