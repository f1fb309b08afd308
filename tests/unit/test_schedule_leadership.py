"""The leadership state machine: assigned -> claim (fence) -> catch up -> lead; any loss stops
firing at once."""

from __future__ import annotations

from streamjobs.scheduler.leader import Leadership, Role


def leader() -> Leadership:
    lead = Leadership("w1")
    lead.assigned()
    lead.claimed(end_offset=5)
    assert lead.read_to(5)
    return lead


def test_a_scheduler_without_the_partition_never_fires() -> None:
    lead = Leadership("w1")
    assert lead.role is Role.FOLLOWER
    assert not lead.leading
    lead.claimed(end_offset=0)  # a claim without an assignment is ignored
    assert not lead.read_to(10)
    assert not lead.leading


def test_assignment_alone_does_not_make_a_leader_it_must_claim_first() -> None:
    lead = Leadership("w1")
    lead.assigned()
    assert lead.must_claim
    assert not lead.leading


def test_a_claimant_leads_only_after_reading_to_the_end_offset_seen_after_fencing() -> None:
    lead = Leadership("w1")
    lead.assigned()
    lead.claimed(end_offset=7)
    assert lead.role is Role.CATCHING_UP
    assert not lead.read_to(6)
    assert not lead.leading
    assert lead.read_to(7)
    assert lead.leading
    assert lead.terms == 1


def test_losing_the_partition_stops_firing_at_once() -> None:
    lead = leader()
    lead.released()
    assert lead.role is Role.FOLLOWER
    assert not lead.leading


def test_a_leader_reassigned_the_partition_claims_again_before_firing() -> None:
    lead = leader()
    lead.released()
    lead.assigned()
    assert lead.must_claim
    assert not lead.leading
    lead.claimed(end_offset=9)
    assert lead.read_to(9)
    assert lead.terms == 2


def test_a_reassignment_while_catching_up_starts_the_claim_over() -> None:
    lead = Leadership("w1")
    lead.assigned()
    lead.claimed(end_offset=3)
    lead.released()
    lead.assigned()
    assert not lead.read_to(100)  # the old end offset no longer counts: claim first
    assert lead.must_claim
