"""The loopback cluster harness behind `python -m simulations.cluster`: real formd processes
(and Serf agents for comparison) on 127.0.0.1, a workload and fault schedule, a report."""
