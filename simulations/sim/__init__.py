"""The deterministic in-process simulation behind `python -m simulations.run`.

options      what a run is asked to do, and the CLI's parsers
determinism  seeding trio's scheduler; worker threads run inline
shared_verify one signature check per record for the whole simulated cluster
shared_placement one placement order per job and node set for the whole simulated cluster
network      the simulated network with slow links
world        machines running formd's Node and JobLoop; crash, restart, freeze
executor     the simulated executor (a duration and a deterministic result)
workload     the jobs of a run and how they are submitted
faults       the crash / partition / slow-node schedule
recorder     log lines, membership verdicts and convergence probes as they happen
scenario     the phases of one run (boot here)
active       the active phase: the timeline of samples, probes, faults and submissions
ending       settle, inject, converge
run_record   what a run leaves behind for the report
facts        the end state, read out of the nodes
invariants   the checks every run ends with
report       report.json's sections
heartbeat_doc document growth under heartbeats, for many simulated hours
record_writer a node record written as Node.publish writes it, without a Node
warm_start   begin from a cluster that already formed
plots        the PNGs beside report.json
session      one invocation: runs, report, plots
"""
