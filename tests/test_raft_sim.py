"""Classic Raft scenarios on the simulator, each over many seeds.

Every scenario runs on :class:`raftsim.Sim`, which checks the safety invariants after
every delivery and step (see its module docstring); the tests here add the concrete
outcome each scenario is about (who leads, what committed, how many round trips...).
``RAFTSIM_SEEDS=n`` changes the number of seeds of every scenario and
``RAFTSIM_SEED_START=s`` shifts them; the terminal summary prints each scenario's cost.
"""

from __future__ import annotations

import pytest
from raftsim import Sim, chaos, election_storm, over_seeds, repair

from nodes.raft import Role
from nodes.types import MsgType

ET = 10  # the simulator's default election_ticks
ELECTION = 20 * ET  # generous bound, in steps, for an election with a reliable network


def others(sim: Sim, *excluded: str) -> list[str]:
    return [i for i in sim.ids if i not in excluded]


def settled(sim: Sim, pool: list[str]) -> bool:
    """One term across ``pool`` and every node in it follows that term's leader (no
    candidate left that could still depose it)."""
    leader = sim.leader(pool)
    return leader is not None and all(
        sim.term(i) == sim.term(leader) and sim.raft(i).leader == leader for i in pool)


def stable_leader(sim: Sim, steps: int, among: list[str] | None = None) -> tuple[str, int]:
    """Wait until ``among`` (default: all) settles on a leader, then assert that neither
    the leader nor the term changes throughout the next ``steps`` steps."""
    pool = among if among is not None else list(sim.ids)
    sim.run_until(lambda: settled(sim, pool), ELECTION, f"{pool} settle on a leader")
    leader = sim.leader(pool)
    assert leader is not None
    term = sim.term(leader)
    for _ in range(steps):
        sim.step()
        assert sim.leader(pool) == leader and sim.term(leader) == term, (
            f"seed {sim.seed}: leadership moved from {leader}@{term} to "
            f"{sim.leader(pool)}")
    return leader, term


# --------------------------------------------------------------------------- elections


@pytest.mark.parametrize("n", [3, 5])
def test_initial_election(n: int) -> None:
    def scenario(seed: int) -> int:
        sim = Sim(n, seed)
        steps = sim.run_until(lambda: sim.leader() is not None, ELECTION, "first leader")
        leader, term = stable_leader(sim, 100)
        # Everybody knows the leader and shares its term.
        for nid in sim.ids:
            assert sim.raft(nid).leader == leader and sim.term(nid) == term
        return steps

    times = over_seeds(f"initial_election[{n}]", 200, scenario)
    # Randomised timeouts: most elections succeed in the first round.
    assert sorted(times)[len(times) // 2] < 3 * ET


def test_reelection_after_leader_cut_off() -> None:
    def scenario(seed: int) -> None:
        sim = Sim(3, seed)
        l1 = sim.wait_leader(ELECTION)
        sim.isolate(l1)
        l2 = sim.wait_leader(ELECTION, among=others(sim, l1))
        assert l2 != l1
        # The old leader rejoins: it must not disturb the new one (it stepped down by
        # CheckQuorum while away; PreVote kept its term from growing).
        sim.heal()
        leader, _ = stable_leader(sim, 60)
        assert leader == l2 and sim.role(l1) is Role.FOLLOWER
        # No quorum: two of three cut off, nobody may become leader.
        sim.isolate(l2)
        third = others(sim, l1, l2)[0]
        sim.isolate(third)
        for _ in range(100):
            sim.step()
        assert all(sim.role(i) is not Role.LEADER for i in sim.ids), "leader without quorum"
        sim.heal()
        sim.wait_leader(ELECTION)

    over_seeds("reelection", 200, scenario)


def test_a_candidate_asks_again_a_peer_whose_vote_request_was_lost() -> None:
    """Raft retries RPCs that get no answer (section 5.1): a candidate whose vote requests
    were lost (the peers were unreachable) asks again within the same term, and wins it
    once they can hear it, without waiting for its election timeout to start a new one."""
    def scenario(seed: int) -> None:
        # No CheckQuorum: its lease would make the survivor ignore the requests anyway.
        sim = Sim(3, seed, pre_vote=False, check_quorum=False, election_ticks=40)
        leader = sim.wait_leader(ELECTION)
        sim.propose_and_wait("a")
        c = others(sim, leader)[0]
        sim.crash(leader)
        for p in others(sim, c):
            sim.block(c, p)
        sim.campaign(c)
        term = sim.term(c)
        assert sim.role(c) is Role.CANDIDATE
        sim.run(8)  # the requests of this term are lost
        sim.heal()
        sim.run_until(lambda: sim.role(c) is Role.LEADER, 30, "the candidate to win")
        assert sim.term(c) == term, "won only by starting a new term"

    over_seeds("vote_retry", 100, scenario)


def test_many_elections() -> None:
    def scenario(seed: int) -> int:
        sim = Sim(7, seed)
        sim.wait_leader(ELECTION)
        for _ in range(8):
            cut = sim.rng.sample(sim.ids, 3)
            for nid in cut:
                sim.isolate(nid)
            sim.wait_leader(2 * ELECTION, among=others(sim, *cut))
            sim.heal()
        sim.wait_leader(2 * ELECTION)
        return len(sim.leaders)

    terms = over_seeds("many_elections", 100, scenario)
    assert sum(terms) > 2 * len(terms)  # the cuts really forced new elections


# --------------------------------------------------------------------------- agreement


def test_agreement_with_failed_follower() -> None:
    def scenario(seed: int) -> None:
        sim = Sim(3, seed, drop=0.02)
        sim.wait_leader(ELECTION)
        sim.propose_and_wait(101)
        leader = sim.leader()
        assert leader is not None
        follower = others(sim, leader)[0]
        sim.isolate(follower)
        rest = others(sim, follower)
        for v in (102, 103, 104):
            sim.propose_and_wait(v, nodes=rest)
        assert not sim.has_applied(102, follower)
        sim.heal()
        sim.propose_and_wait(105)
        sim.run_until(sim.converged, 100, "the follower catches up")

    over_seeds("failed_follower", 200, scenario)


def test_no_agreement_without_majority() -> None:
    def scenario(seed: int) -> None:
        sim = Sim(5, seed)
        sim.wait_leader(ELECTION)
        sim.propose_and_wait(10)
        leader = sim.leader()
        assert leader is not None
        cut = sim.rng.sample(others(sim, leader), 3)
        for nid in cut:
            sim.isolate(nid)
        commits = {i: sim.commit_index(i) for i in sim.ids}
        placed = sim.propose(11)
        assert placed is not None and placed[1] == commits[leader] + 1
        for _ in range(150):
            sim.step()
            for nid in sim.ids:
                assert sim.commit_index(nid) == commits[nid], (
                    f"{nid} committed without a majority")
        assert 11 not in sim.value_index
        sim.heal()
        sim.propose_and_wait(12, max_steps=600)
        sim.run_until(sim.converged, 200, "convergence after heal")

    over_seeds("no_majority", 150, scenario)


def test_concurrent_proposals() -> None:
    def scenario(seed: int) -> None:
        sim = Sim(5, seed, max_delay=3)
        sim.wait_leader(ELECTION)
        values = [f"c{k}" for k in range(30)]
        for v in values:  # all in the same step, before any is replicated
            assert sim.propose(v, key=f"k{len(v) % 3}") is not None
        for v in values:
            sim.wait_committed(v, max_steps=200)
        indexes = [sim.value_index[v] for v in values]
        assert indexes == sorted(indexes) and len(set(indexes)) == len(values)
        sim.run_until(sim.converged, 100)
        assert sim.kv(sim.ids[0]) == sim.kv(sim.ids[-1])

    over_seeds("concurrent_proposals", 200, scenario)


def test_rejoin_of_partitioned_leader() -> None:
    def scenario(seed: int) -> None:
        sim = Sim(3, seed)
        sim.wait_leader(ELECTION)
        sim.propose_and_wait("a101")
        l1 = sim.leader()
        assert l1 is not None
        sim.isolate(l1)
        for v in ("x102", "x103", "x104"):  # accepted by a leader that cannot commit
            assert sim.propose(v, at=l1) is not None
        rest = others(sim, l1)
        sim.wait_leader(ELECTION, among=rest)
        sim.propose_and_wait("b103", nodes=rest)
        l2 = sim.leader(rest)
        assert l2 is not None
        # The new leader is cut off and the old one comes back.
        sim.heal()
        sim.isolate(l2)
        sim.propose_and_wait("c104", nodes=others(sim, l2), max_steps=600)
        sim.heal()
        sim.propose_and_wait("d105", max_steps=600)
        sim.run_until(sim.converged, 200)
        for v in ("x102", "x103", "x104"):
            assert v not in sim.value_index, f"uncommitted {v} of a deposed leader applied"
        assert sim.kv(l1) == {"x": "d105"}

    over_seeds("rejoin", 200, scenario)


def test_fast_backup_over_long_divergent_logs() -> None:
    """A minority leader piles up 60 entries that will never commit; the majority
    commits 60 of its own under a new leader, which is then replaced by another one
    (so the leader that meets the stale logs probes them at its long log's end). With
    the conflict hint a follower skips a whole term per rejection."""
    divergence = 60

    def scenario(seed: int) -> int:
        sim = Sim(5, seed, min_delay=1, max_delay=1)  # no reordering: every reject counts
        l1 = sim.wait_leader(ELECTION)
        sim.propose_and_wait("base")
        buddy = others(sim, l1)[0]
        majority = others(sim, l1, buddy)
        sim.partition([l1, buddy], majority)
        for k in range(divergence):
            sim.propose(f"stale{k}", at=l1)
        sim.run(5)
        assert sim.raft(buddy).log.last_index() > divergence
        l2 = sim.wait_leader(ELECTION, among=majority)
        for k in range(divergence):
            sim.propose(f"new{k}", at=l2)
        sim.wait_committed(f"new{divergence - 1}", nodes=majority)
        # Replace l2 by a leader elected with the stale buddy's vote: it starts probing
        # the buddy (and later l1) at the end of its long log.
        rejects_before = sim.stats["app_reject"]
        sim.partition([l1], [l2], [buddy, *others(sim, l1, buddy, l2)])
        sim.wait_leader(ELECTION, among=[buddy, *others(sim, l1, buddy, l2)])
        sim.heal()
        sim.propose_and_wait("after", max_steps=400)
        sim.run_until(sim.converged, 200)
        assert all(f"stale{k}" not in sim.value_index for k in range(divergence))
        return sim.stats["app_reject"] - rejects_before

    results = over_seeds("fast_backup", 150, scenario)
    worst = max(results)
    # Two stale followers, one divergent term each: one rejection apiece (the hint skips
    # the whole term), where a one-entry-at-a-time back-off would need 60 apiece.
    assert worst <= 4, f"{worst} rejections to repair {divergence} divergent entries"


# --------------------------------------------------------------------------- persistence


def test_persistence_across_full_and_partial_restarts() -> None:
    def scenario(seed: int) -> None:
        sim = Sim(5, seed, max_delay=3)
        sim.wait_leader(ELECTION)
        sim.propose_and_wait(11)
        # Whole cluster: the durable state alone must bring back every committed entry.
        applied_before = sim.max_applied
        terms_before = {i: sim.term(i) for i in sim.ids}
        for nid in sim.ids:
            sim.crash(nid)
        for nid in sim.ids:
            sim.restart(nid)
            assert sim.term(nid) == terms_before[nid]
            assert sim.raft(nid).log.last_index() >= sim.nodes[nid].store.hard_state.commit
        sim.propose_and_wait(12, max_steps=600)
        assert sim.value_index[12] > applied_before
        # The leader alone, repeatedly.
        for v in (13, 14):
            leader = sim.wait_leader(ELECTION)
            sim.crash(leader)
            sim.restart(leader)
            sim.propose_and_wait(v, max_steps=600)
        # Two followers down while the others commit, then back.
        for v in (15, 16):
            leader = sim.wait_leader(ELECTION)
            down = sim.rng.sample(others(sim, leader), 2)
            for nid in down:
                sim.crash(nid)
            sim.propose_and_wait(v, max_steps=600)
            for nid in down:
                sim.restart(nid)
        # A partitioned leader with a follower, both crash; the leader comes back alone.
        leader = sim.wait_leader(ELECTION)
        buddy = others(sim, leader)[0]
        sim.partition([leader, buddy], others(sim, leader, buddy))
        sim.propose("lost", at=leader)
        sim.run(3)
        sim.crash(leader)
        sim.crash(buddy)
        sim.heal()
        sim.restart(leader)
        sim.propose_and_wait(17, max_steps=600)
        sim.restart(buddy)
        sim.propose_and_wait(18, max_steps=600)
        sim.run_until(sim.converged, 200)
        sim.check_all()

    over_seeds("persistence", 150, scenario)


def _figure8_scenario(seed: int, unreliable: bool) -> int:
    """Leaders crash at random moments, often right after they accepted a command
    (so entries of old terms sit on various minorities); at most two nodes are down."""
    if unreliable:
        sim = Sim(5, seed, drop=0.1, dup=0.05, max_delay=6)
    else:
        sim = Sim(5, seed, max_delay=2)
    rng = sim.rng
    for it in range(40):
        leader = sim.leader()
        if leader is not None:
            sim.propose(f"f{it}")
        sim.run(rng.randint(0, 5) if rng.random() < 0.7 else rng.randint(0, 60))
        if unreliable and rng.random() < 0.15:
            sim.partition(rng.sample(sim.ids, 3))
        elif unreliable and rng.random() < 0.3:
            sim.heal()
        if leader is not None and sim.is_up(leader) and rng.random() < 0.5:
            sim.crash(leader)
        down = [i for i in sim.ids if not sim.is_up(i)]
        if len(down) > 2 or (down and rng.random() < 0.3):
            sim.restart(rng.choice(down))
    repair(sim)
    return len(sim.leaders)


def test_figure8_reliable() -> None:
    terms = over_seeds("figure8", 200, lambda seed: _figure8_scenario(seed, False))
    assert sum(terms) / len(terms) > 5  # many leaders came and went


def test_figure8_unreliable() -> None:
    terms = over_seeds("figure8_unreliable", 200, lambda seed: _figure8_scenario(seed, True))
    assert sum(terms) / len(terms) > 5


CONFIGS = [  # (pre_vote, check_quorum, max_batch, max_inflight)
    (True, True, 1024, 64),
    (False, True, 1024, 64),
    (True, False, 1, 1),
    (False, False, 3, 2),
]


def test_churn() -> None:
    """Random crashes, restarts, partitions (symmetric and one-way), writes and reads on
    a lossy, duplicating, reordering network, in each PreVote/CheckQuorum configuration;
    then repair everything and demand progress."""

    def scenario(seed: int) -> tuple[int, int]:
        pre_vote, check_quorum, max_batch, max_inflight = CONFIGS[seed % len(CONFIGS)]
        sim = Sim(5, seed, drop=0.05, dup=0.05, max_delay=4, pre_vote=pre_vote,
                  check_quorum=check_quorum, max_batch=max_batch, max_inflight=max_inflight,
                  compact_every=20 if seed % 3 == 0 else None)
        chaos(sim, 500)
        repair(sim)
        return sim.stats["read_served"], sim.max_applied

    results = over_seeds("churn", 400, scenario)
    assert sum(r for r, _ in results) > 5 * len(results)  # reads did get served and checked
    assert sum(a for _, a in results) > 20 * len(results)  # and writes committed


def test_election_storm() -> None:
    """Nodes reboot every few steps, leaders are cut off, timeouts are short and links
    slow: lots of split votes and restarted voters (what forget-vote would break)."""

    def scenario(seed: int) -> int:
        sim = Sim(5, seed, max_delay=5, election_ticks=4, heartbeat_ticks=1,
                  pre_vote=seed % 2 == 0, check_quorum=seed % 4 < 2)
        election_storm(sim, 400)
        repair(sim)
        return len(sim.leaders)

    terms = over_seeds("election_storm", 150, scenario)
    assert sum(terms) > 10 * len(terms)


# --------------------------------------------------------------------------- snapshots


def test_snapshot_install_reliable() -> None:
    def scenario(seed: int) -> None:
        sim = Sim(3, seed)
        sim.wait_leader(ELECTION)
        sim.propose_and_wait("v0")
        leader = sim.leader()
        assert leader is not None
        lagger = others(sim, leader)[0]
        sim.isolate(lagger)
        for k in range(1, 41):
            sim.propose(f"v{k}", key=f"k{k % 7}")
        sim.wait_committed("v40", nodes=others(sim, lagger))
        sim.run(2 * ET)  # appends to the lagger in flight are lost by now
        for nid in others(sim, lagger):
            assert sim.compact(nid) is not None
        snap_index = sim.raft(leader).log.offset
        assert snap_index >= 40
        sim.heal()
        sim.run_until(sim.converged, 200, "the lagger catches up by snapshot")
        assert sim.stats["snap"] >= 1
        store = sim.nodes[lagger].store
        assert store.snapshot is not None and store.snapshot.index >= snap_index
        assert sim.kv(lagger) == sim.kv(leader)
        sim.propose_and_wait("after")  # and replication resumes after the snapshot

    over_seeds("snapshot_reliable", 200, scenario)


def _snapshot_churn(seed: int, crashes: bool) -> int:
    """Every node compacts every 8 entries while random nodes get isolated (and, with
    ``crashes``, crash and restart) under writes: laggards need snapshots."""
    sim = Sim(3 if seed % 2 else 5, seed, drop=0.1, dup=0.05, max_delay=4, compact_every=8)
    chaos(sim, 400, propose=0.3, read=0.03, crash=0.03 if crashes else 0.0, partition=0.0,
          one_way=0.0, heal=0.0, keys="abcd")
    rng = sim.rng
    for _ in range(8):  # and a few long isolations of one node
        sim.isolate(rng.choice(sim.ids))
        chaos(sim, 40, propose=0.4, read=0.0, crash=0.05 if crashes else 0.0, partition=0.0,
              one_way=0.0, heal=0.0)
        sim.heal()
    repair(sim)
    return sim.stats["snap"]


def test_snapshot_install_unreliable() -> None:
    snaps = over_seeds("snapshot_unreliable", 100, lambda s: _snapshot_churn(s, False))
    assert sum(1 for s in snaps if s) > len(snaps) // 2  # snapshots really were installed


def test_snapshot_install_with_crashes() -> None:
    snaps = over_seeds("snapshot_crashes", 200, lambda s: _snapshot_churn(s, True))
    assert sum(1 for s in snaps if s) > len(snaps) // 2


def test_snapshot_whole_cluster_crash() -> None:
    def scenario(seed: int) -> None:
        sim = Sim(3, seed, max_delay=3, compact_every=10)
        sim.wait_leader(ELECTION)
        for k in range(35):
            sim.propose(k, key=f"k{k % 5}")
            sim.run(2)
        sim.propose_and_wait("last")
        before = {nid: sim.kv(nid) for nid in sim.ids}
        for nid in sim.ids:
            sim.crash(nid)
        for nid in sim.ids:
            sim.restart(nid)
            snap = sim.nodes[nid].store.snapshot
            assert snap is not None and sim.nodes[nid].applied == snap.index
        # Committed entries after the snapshot come back out of ready() and re-apply.
        sim.run_until(sim.converged, 300)
        for nid in sim.ids:
            assert sim.kv(nid) == before[nid]
        sim.propose_and_wait("after", max_steps=600)

    over_seeds("snapshot_cluster_crash", 150, scenario)


# --------------------------------------------------------------------------- etcd extras


def test_prevote_rejoining_node_does_not_disrupt() -> None:
    def scenario(seed: int) -> None:
        sim = Sim(5, seed, pre_vote=True, check_quorum=True)
        leader, term = stable_leader(sim, 10)
        away = sim.rng.choice(others(sim, leader))
        sim.isolate(away)
        for k in range(30):
            sim.propose(k)
            sim.run(10)
        assert sim.term(away) == term, "PreVote should keep the isolated node's term"
        sim.heal()
        assert stable_leader(sim, 150) == (leader, term)
        sim.run_until(sim.converged, 100)

    over_seeds("prevote_rejoin", 120, scenario)


def test_check_quorum_lease_ignores_rejoining_candidate() -> None:
    """pre_vote=False, check_quorum=True: the isolated node's term inflates. Its vote
    requests are ignored by nodes that heard from the leader within an election timeout,
    and, being behind, it never wins. (As in etcd, the leader does learn the higher term
    from the node's answer to a heartbeat and steps down: that is how the stuck node is
    freed; one new election follows.)"""

    def scenario(seed: int) -> None:
        sim = Sim(5, seed, pre_vote=False, check_quorum=True)
        leader, term = stable_leader(sim, 10)
        away = sim.rng.choice(others(sim, leader))
        sim.isolate(away)
        for k in range(30):
            sim.propose(k)
            sim.run(10)
        inflated = sim.term(away)
        assert inflated > term + 3
        # While it can only talk (not listen), the lease makes everybody ignore it.
        for nid in others(sim, away):
            sim.unblock(away, nid)
        for _ in range(100):
            sim.step()
            assert sim.leader(others(sim, away)) == leader and sim.term(leader) == term
        assert not any(c == away and t > term for (_, t), c in sim.granted.items())
        sim.heal()
        sim.propose_and_wait("after", max_steps=600)
        assert sim.leader() != away
        sim.run_until(sim.converged, 100)

    over_seeds("lease_rejoin", 120, scenario)


def test_isolated_leader_steps_down() -> None:
    def scenario(seed: int) -> int:
        sim = Sim(5, seed)
        leader = sim.wait_leader(ELECTION)
        sim.isolate(leader)
        took = sim.run_until(lambda: sim.role(leader) is not Role.LEADER, 3 * ET,
                             "CheckQuorum step-down")
        return took

    took = over_seeds("check_quorum_step_down", 200, scenario)
    assert max(took) <= 2 * ET  # at most two CheckQuorum periods


def test_leader_that_can_send_but_not_receive_is_replaced() -> None:
    def scenario(seed: int) -> None:
        sim = Sim(5, seed, pre_vote=seed % 2 == 0)
        old = sim.wait_leader(ELECTION)
        for nid in others(sim, old):
            sim.block(nid, old)
        sim.run_until(lambda: sim.role(old) is not Role.LEADER, 3 * ET, "step-down")
        rest = others(sim, old)
        sim.wait_leader(ELECTION, among=rest)
        sim.propose_and_wait("progress", nodes=rest)
        # Without PreVote the first leader may still be deposed by a rival candidate of
        # a higher term; once settled, the one-way node cannot disrupt it.
        stable_leader(sim, 150, among=rest)
        assert sim.role(old) is not Role.LEADER
        sim.heal()
        sim.propose_and_wait("healed", max_steps=600)

    over_seeds("one_way_leader", 150, scenario)


@pytest.mark.parametrize("direction", ["receive_only", "send_only"])
def test_one_way_follower_does_not_disrupt(direction: str) -> None:
    def scenario(seed: int) -> int:
        sim = Sim(5, seed, pre_vote=seed % 2 == 0, check_quorum=True)
        leader = sim.wait_leader(ELECTION)
        sim.propose_and_wait("start")
        f = sim.rng.choice(others(sim, leader))
        for nid in others(sim, f):
            if direction == "receive_only":
                sim.block(f, nid)
            else:
                sim.block(nid, f)
        terms = len(sim.leaders)
        for k in range(20):
            sim.propose_and_wait(f"p{k}", nodes=others(sim, f))
            sim.run(10)
        extra = len(sim.leaders) - terms
        # At most one extra election, never a leadership carousel, and the one-way node
        # never leads.
        assert extra <= 1 and sim.leader() != f
        sim.heal()
        sim.propose_and_wait("healed", max_steps=600)
        sim.run_until(sim.converged, 200)
        return extra

    extra = over_seeds(f"one_way_follower[{direction}]", 100, scenario)
    assert sum(extra) <= len(extra) // 10


# --------------------------------------------------------------------------- ReadIndex


def test_read_after_leader_change_waits_for_commit_in_new_term() -> None:
    """The old leader commits a write, then crashes before telling anyone it committed.
    A read on the new leader, requested at once, must wait for the no-op of the new term
    to commit and then return that write."""

    def scenario(seed: int) -> None:
        # (No CheckQuorum: its lease would make c ignore b's hand-driven, early campaign.)
        sim = Sim(3, seed, manual=True, check_quorum=False)
        a, b, _ = sim.ids
        sim.campaign(a)
        sim.deliver_all()
        assert sim.role(a) is Role.LEADER
        sim.propose("w1", at=a)
        sim.deliver(types=[MsgType.APP], dst=b)
        sim.deliver(types=[MsgType.APP_RESP], src=b)  # a commits and applies w1
        assert sim.has_applied("w1", a) and not sim.has_applied("w1", b)
        w1 = sim.value_index["w1"]
        sim.crash(a)
        sim.drop()
        sim.campaign(b)
        votes = [MsgType.PRE_VOTE, MsgType.PRE_VOTE_RESP, MsgType.VOTE, MsgType.VOTE_RESP]
        while sim.deliver(types=votes):  # the election only: b's no-op stays held
            pass
        assert sim.role(b) is Role.LEADER and sim.commit_index(b) < w1
        r = sim.read(b)
        assert r is not None and r.required >= w1
        # Heartbeats flow but the no-op does not: the read must not be confirmed.
        sim.drop(types=[MsgType.APP])
        for _ in range(3 * ET):
            sim.step()
            sim.drop(types=[MsgType.APP])
            sim.deliver(types=[MsgType.HEARTBEAT, MsgType.HEARTBEAT_RESP])
        assert r.index == -1 and not r.dropped
        sim.deliver_all()
        for _ in range(10):
            sim.step()
            sim.deliver_all()
        assert r.served >= 0 and r.index >= w1 and r.value == "w1"

    over_seeds("read_after_leader_change", 30, scenario)


@pytest.mark.parametrize("check_quorum", [True, False])
def test_read_on_deposed_leader_never_returns_stale(check_quorum: bool) -> None:
    def scenario(seed: int) -> None:
        sim = Sim(5, seed, check_quorum=check_quorum)
        old = sim.wait_leader(ELECTION)
        sim.propose_and_wait("old")
        sim.isolate(old)
        unaware = sim.read(old)  # it still believes it leads
        assert unaware is not None
        rest = others(sim, old)
        new = sim.wait_leader(2 * ELECTION, among=rest)
        sim.propose_and_wait("new", nodes=rest)
        stale = sim.read(old)  # None if CheckQuorum already made it step down
        assert stale is not None or check_quorum
        fresh = sim.read(new)
        assert fresh is not None
        sim.run(6 * ET)
        for r in (unaware, stale):
            if r is not None:
                assert r.served == -1, f"partitioned old leader served {r}"
                # CheckQuorum: it stepped down and told the client; else it still waits.
                assert r.dropped == check_quorum
        assert fresh.served >= 0 and fresh.value == "new"

    over_seeds(f"read_deposed_leader[cq={check_quorum}]", 100, scenario)


def test_reads_are_linearizable_under_churn() -> None:
    """Reads asked of random nodes amid writes, crashes and partitions: the simulator
    checks every confirmed read against the writes committed before it was asked."""

    def scenario(seed: int) -> tuple[int, int]:
        sim = Sim(3, seed, drop=0.05, max_delay=4, check_quorum=seed % 2 == 0)
        chaos(sim, 600, propose=0.3, read=0.3, crash=0.02, partition=0.02, one_way=0.01,
              heal=0.03, keys="x", read_anywhere=True)
        served = sum(1 for r in sim.reads if r.served >= 0)
        dropped = sum(1 for r in sim.reads if r.dropped)
        return served, dropped

    out = over_seeds("linearizable_reads", 150, scenario)
    assert sum(s for s, _ in out) > 10 * len(out)
    assert sum(d for _, d in out) > 0  # some reads were abandoned by deposed leaders
