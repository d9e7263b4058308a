"""The load balancer sync: external pools (HAProxy backends, F5 pools) follow the Services' ready endpoints."""
