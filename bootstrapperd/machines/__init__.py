"""The machines and what is known of them: who each one is and where it is (the resolver and its
frozen machine view), their DHCP leases, their boot timelines and the stages read off them, and
the state database all of it is kept in across restarts."""
