"""Separate hosts on one machine for real formd processes: network namespaces on a bridge
(network), a Podman service and image store per host (podman_store), N formd nodes deployed on
them the way an operator would (cluster). Used by the tests and `simulations.cluster --netns`."""
