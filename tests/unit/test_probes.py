"""Probes and suspicions in the node driver over the simulated network under MockClock."""

from __future__ import annotations

import dataclasses

import pytest
import trio
from sim_nodes import SETTINGS, running_cluster, wait_for

from daemon.cluster.gossip import BroadcastQueue


async def test_a_node_whose_probe_replies_are_lost_refutes_every_suspicion_and_stays_alive(autojump_clock):
    async with running_cluster(7, 4, seed=21) as (sim, addresses):
        victim = sim.nodes[addresses[1]]
        others = [a for a in addresses if a != addresses[1]]
        short = victim.identity.node_hex[:12]
        answer = victim.prober.handle
        muted = True

        async def unanswered(sender, payload):
            return None if muted else await answer(sender, payload)

        victim.prober.handle = unanswered
        suspected = set()
        for _ in range(200):  # 20 s of lost acks: five suspicion timeouts
            await trio.sleep(0.1)
            suspected |= {a for a in others if victim.identity.node_id in sim.nodes[a]._suspects}
            for address in others:
                assert sim.nodes[address].peer_status(victim.identity.node_id) != "dead"
        muted = False
        assert suspected == set(others)  # every prober suspected it at least once
        assert victim.refutations >= 3
        await wait_for(lambda: all(victim.identity.node_id not in sim.nodes[a]._suspects for a in others))
        # A suspicion a node already counted ends when the victim's refuting record reaches it,
        # which can be a gossip round or a repair after the observers dropped it.
        await wait_for(lambda: sim.everyone_sees(addresses, addresses))
        for address in others:
            events = [m for m, f in sim.logs[address].lines if f.get("id") == short]
            assert "peer dead" not in events and "peer suspect" in events
            assert [f for m, f in sim.logs[address].lines if m.startswith("bad")] == []


async def test_a_crashed_node_is_found_by_probes_long_before_the_silence_backstop(autojump_clock):
    async with running_cluster(8, 4, seed=23) as (sim, addresses):
        victim = sim.nodes[addresses[2]]
        others = [a for a in addresses if a != addresses[2]]
        sim.crash(addresses[2])
        crashed = trio.current_time()
        await wait_for(lambda: sim.everyone_sees(others, [addresses[2]], "dead"), step=0.05)
        took = trio.current_time() - crashed
        config = sim.nodes[others[0]].membership.config
        # The suspicion path: a probe round (<= 3 s for 3 peers) + suspicion_timeout (4 s).
        assert took < config.dead_timeout(4)
        for address in others:
            assert sim.nodes[address].membership.suspected_by(victim.identity.node_id) >= 1


async def test_a_suspicion_naming_a_made_up_freshness_is_refuted_past_it(autojump_clock):
    async with running_cluster(9, 4, seed=25) as (sim, addresses):
        liar, target = sim.nodes[addresses[0]], sim.nodes[addresses[1]]
        liar._write_suspicions({target.identity.node_id: (target.incarnation, 500)})
        await wait_for(lambda: target.heartbeat > 500, limit=5)
        await trio.sleep(2 * liar.membership.config.suspicion_timeout(4))
        await wait_for(lambda: sim.everyone_sees(addresses, addresses))
        assert target.incarnation == 1 and target.refutations == 1


# As at scale (1000 nodes: a record refresh every 333 s, a suspicion timeout of 12 s), and no
# anti-entropy within the test: what heals a lagging observer is the refutation alone.
SLOW_REFRESH = dataclasses.replace(SETTINGS, refresh_rate=0.05, anti_entropy_interval=600.0)


@pytest.mark.parametrize("seed", [31, 32, 33])
async def test_a_suspicion_naming_a_write_that_did_not_spread_is_still_refuted(autojump_clock, seed):
    """The victim's latest periodic write reached no one (it goes out with heartbeat
    retransmits: one at 4 nodes), then an observer's probes fail and it names the freshness it
    holds, one behind the victim's own. That suspicion must still be refuted: every observer
    holds exactly the freshness it names, and nothing else would advance it before they all
    show the victim dead, so the victim must not take it as answered by its later write."""
    async with running_cluster(10, 4, sim_seed=seed, settings=SLOW_REFRESH, seed=seed) as (sim, addresses):
        victim, observer = sim.nodes[addresses[1]], sim.nodes[addresses[2]]
        victim.publish()
        victim.queue = BroadcastQueue()  # that write's push was lost everywhere
        behind = observer.membership.member(victim.identity.node_id).freshness
        assert behind < (victim.incarnation, victim.heartbeat)
        observer._suspect(victim.identity.node_id)  # what its failed probes do
        assert observer._suspects[victim.identity.node_id] == behind
        timeout = observer.membership.config.suspicion_timeout(4)
        for _ in range(int(3 * timeout / 0.1)):
            await trio.sleep(0.1)
            for address in addresses:
                assert sim.nodes[address].peer_status(victim.identity.node_id) != "dead", address
        assert victim.refutations == 1
        await wait_for(lambda: sim.everyone_sees(addresses, addresses), limit=5)
