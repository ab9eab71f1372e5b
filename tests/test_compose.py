"""Composed random faults (``random: {compose: true}``): the pure draws of
:mod:`lab.compose` and the majority check they are held to."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab import compose, topology
from lab.compose import Draw, State, draw, keeps_majority, working_majority
from lab.scenario import COMPOSE_ACTIONS

FIVE = ("n1", "n2", "n3", "n4", "n5")
TIMING = (0.15, 0.05)


# --------------------------------------------------------------------------- majority


def test_a_healthy_cluster_has_a_working_majority() -> None:
    assert working_majority(FIVE, (), ()) == ("n1", "n2", "n3")


def test_two_members_down_of_five_still_leave_a_majority() -> None:
    assert working_majority(FIVE, ("n1", "n2"), ()) == ("n3", "n4", "n5")
    assert working_majority(FIVE, ("n1", "n2", "n3"), ()) is None


def test_a_minority_cut_off_leaves_the_majority_working() -> None:
    cuts = topology.components([["n1", "n2"], ["n3", "n4", "n5"]])
    assert working_majority(FIVE, (), cuts) == ("n3", "n4", "n5")
    # ... unless one of the majority side is down too
    assert working_majority(FIVE, ("n4",), cuts) is None


def test_one_way_cuts_count_as_cut() -> None:
    # every member of n3..n5 cannot send to one other of them: no three see each other
    cuts = {("n3", "n4"), ("n4", "n5"), ("n5", "n3")}
    assert working_majority(["n3", "n4", "n5"], (), cuts) is None
    assert working_majority(FIVE, (), cuts) is not None  # n1, n2 and one of them
    assert working_majority(FIVE, ("n1",), cuts) is None


def test_the_majority_must_see_each_other_not_only_a_hub() -> None:
    # n1 sees everyone, but n2..n5 see only n1: a star, not a working majority
    cuts = topology.symmetric({(a, b) for a in FIVE[1:] for b in FIVE[1:] if a != b})
    assert working_majority(FIVE, (), cuts) is None


def test_a_majority_ring_leaves_no_three_that_see_each_other_on_five() -> None:
    cuts = topology.majority_ring(FIVE)
    assert working_majority(FIVE, (), cuts) is None


def test_a_bridge_keeps_a_working_majority() -> None:
    cuts = topology.bridge(FIVE)  # n1 n2 | n3 | n4 n5: n3 with either side is 3
    assert working_majority(FIVE, (), cuts) == ("n1", "n2", "n3")


def test_three_members_one_isolated() -> None:
    three = ("n1", "n2", "n3")
    assert working_majority(three, (), topology.isolate("n1", three)) == ("n2", "n3")
    assert working_majority(three, ("n2",), topology.isolate("n1", three)) is None


def test_keeps_majority_adds_the_draw_to_what_is_active() -> None:
    state = State(FIVE, "n1", down=frozenset({"n2"}), paused=frozenset({"n3"}))
    kill = Draw("kill", "random", "n4", ("n4",))
    assert not keeps_majority(state, kill)
    isolate = Draw("isolate", "leader", "n1", ("n1",), cuts=topology.isolate("n1", FIVE))
    assert not keeps_majority(state, isolate)
    harmless = Draw("latency", "random", None, (), {"links": [["n1", "n4"]], "ms": 50,
                                                    "jitter": 0})
    assert keeps_majority(state, harmless)


# --------------------------------------------------------------------------- draws


def _draws(seed: int, n: int = 200, members: tuple[str, ...] = FIVE,
           state: State | None = None) -> list[Draw | None]:
    rng = random.Random(seed)
    state = state or State(members, "n2")
    out = []
    for _ in range(n):
        action = rng.choice(COMPOSE_ACTIONS)
        target = rng.choice(("leader", "follower", "random", "n3"))
        out.append(draw(action, target, state, rng, *TIMING))
    return out


def test_the_same_seed_draws_the_same_faults() -> None:
    assert _draws(7) == _draws(7)
    assert _draws(7) != _draws(8)


def test_every_drawn_link_joins_two_distinct_members() -> None:
    for seed in range(5):
        for d in _draws(seed):
            assert d is not None
            links = d.params.get("links", [])
            assert all(a in FIVE and b in FIVE and a != b for a, b in links), d
            assert len({tuple(x) for x in links}) == len(links), d
            if d.action == "cut-links":
                assert {tuple(x) for x in links} == set(d.cuts) and links, d
            assert set(d.nodes) <= set(FIVE)


def test_every_shape_and_action_is_drawn() -> None:
    draws = [d for seed in range(3) for d in _draws(seed) if d is not None]
    assert {d.action for d in draws} == set(COMPOSE_ACTIONS)
    assert {d.shape for d in draws if d.action == "cut-links"} == set(compose.CUT_SHAPES)
    assert {d.shape for d in draws if d.action == "latency"} == {"touching", "links",
                                                                 "everywhere"}


def test_the_cut_shapes_are_what_they_say() -> None:
    rng = random.Random(3)
    seen = set()
    state = State(FIVE, "n1")
    while len(seen) < len(compose.CUT_SHAPES):
        d = draw("cut-links", "leader", state, rng, *TIMING)
        assert d is not None
        seen.add(d.shape)
        others = set(FIVE) - {"n1"}
        if d.shape == "cannot-send":
            assert d.cuts == {("n1", o) for o in others}
        elif d.shape == "cannot-receive":
            assert d.cuts == {(o, "n1") for o in others}
        elif d.shape == "split-both":
            assert topology.is_symmetric(d.cuts) and d.cuts
        elif d.shape == "split-one-way":
            assert d.cuts and not (d.cuts & topology.reverse(d.cuts))
        else:
            assert 1 <= len(d.cuts) <= 3


def test_latency_is_scaled_to_the_timing() -> None:
    rng = random.Random(1)
    for _ in range(100):
        d = draw("latency", "random", State(FIVE), rng, 0.3, 0.05)
        assert d is not None and d.nodes == () and d.params["links"]
        assert 0 <= d.params["jitter"] <= d.params["ms"] // 2
        if d.shape == "everywhere":  # a slow network: half a heartbeat to half a timeout
            assert 25 <= d.params["ms"] <= 150, d
            assert len(d.params["links"]) == len(FIVE) * (len(FIVE) - 1)
        else:
            assert 50 <= d.params["ms"] <= 900, d
    assert max(d.params["ms"] for d in [draw("latency", "random", State(FIVE), rng, 0.3, 0.05)
                                        for _ in range(200)] if d) > 300  # above one timeout


def test_leader_target_falls_back_to_a_random_member_when_none_is_known() -> None:
    d = draw("isolate", "leader", State(FIVE, None), random.Random(1), *TIMING)
    assert d is not None and d.fallback and d.member in FIVE
    assert d.note()["fallback"]
    d = draw("isolate", "leader", State(FIVE, "n4"), random.Random(1), *TIMING)
    assert d is not None and not d.fallback and d.nodes == ("n4",)


def test_a_follower_is_never_the_leader() -> None:
    rng = random.Random(1)
    for _ in range(50):
        d = draw("pause", "follower", State(FIVE, "n2"), rng, *TIMING)
        assert d is not None and d.nodes != ("n2",)


@pytest.mark.parametrize("down,paused", [({"n1"}, {"n2"}), ((), {"n1", "n2"}),
                                         ({"n1", "n2"}, ())])
def test_no_process_fault_takes_down_a_majority(down: set[str], paused: set[str]) -> None:
    state = State(FIVE, "n3", frozenset(down), frozenset(paused))
    rng = random.Random(1)
    for action in compose.PROCESS:
        for target in ("leader", "follower", "random", "n4"):
            assert draw(action, target, state, rng, *TIMING) is None


def test_a_process_fault_picks_only_a_running_member() -> None:
    state = State(FIVE, "n1", frozenset({"n1"}), frozenset())
    rng = random.Random(2)
    for _ in range(50):
        d = draw("kill", "leader", state, rng, *TIMING)
        assert d is not None and d.nodes[0] != "n1" and d.fallback
    assert draw("pause", "n1", state, rng, *TIMING) is None  # down already


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32), st.integers(3, 7), st.lists(st.sampled_from(COMPOSE_ACTIONS),
                                                           min_size=1, max_size=12))
def test_applied_draws_never_leave_fewer_than_a_majority_running(seed: int, n: int,
                                                                  actions: list[str]) -> None:
    members = tuple(f"n{k}" for k in range(1, n + 1))
    rng = random.Random(seed)
    down: set[str] = set()
    paused: set[str] = set()
    cuts: set[topology.Link] = set()
    for action in actions:
        state = State(members, rng.choice([None, *members]), frozenset(down),
                      frozenset(paused), frozenset(cuts))
        d = draw(action, rng.choice(("leader", "follower", "random")), state, rng, *TIMING)
        if d is None:
            assert action in compose.PROCESS
            continue
        (paused if d.action == "pause" else down).update(d.takes_down)
        cuts |= d.cuts
        assert len(set(members) - down - paused) >= topology.majority(n)
