# Tests for the session rules and helpers (rego/toolgate/session.rego).
package toolgate.session_tests

import rego.v1

import data.toolgate.tests.codes
import data.toolgate.tests.decide
import data.toolgate.tests.patched
import data.toolgate.tests.req

read_pii := {
	"count": 1, "first_ns": 1, "last_ns": 1,
	"tools": ["accounts.summary.read"],
	"first_decision_id": "d-1", "last_decision_id": "d-1",
}

in_session(who, tool, args, s) := patched(who, tool, args, {
	"request": {"context": {"session": {"id": s.id}}},
	"verified": {"session": s},
})

fresh := {"id": "s-1", "decisions": 0, "tools": {}, "labels": {}, "egress": {"count": 0}}

after_pii := object.union(fresh, {"decisions": 1, "labels": {"customer_pii": read_pii}})

test_web_post_allowed_in_a_session_that_read_nothing if {
	d := decide(in_session("alice", "web.post", {}, fresh))
	d.outcome == "allow"
}

test_web_post_needs_a_manager_after_a_pii_read if {
	d := decide(in_session("alice", "web.post", {}, after_pii))
	d.outcome == "needs_approval"
	codes(d) == {"egress_after_sensitive_read"}
	d.approval.approver_roles == ["support_manager"]
	some r in d.reasons
	contains(r.message, "accounts.summary.read")
	contains(r.message, "d-1")
}

test_a_forgotten_session_still_gates_egress if {
	forgotten := {"forgotten": true, "count": 1, "tools": [], "last_decision_id": ""}
	s := object.union(fresh, {"labels": {"customer_pii": forgotten}})
	d := decide(in_session("alice", "web.post", {}, s))
	d.outcome == "needs_approval"
	codes(d) == {"egress_after_sensitive_read"}
	some r in d.reasons
	contains(r.message, "forget")
}

test_a_label_that_is_not_sensitive_does_not_gate if {
	s := object.union(fresh, {"labels": {"public_docs": read_pii}})
	decide(in_session("alice", "web.post", {}, s)).outcome == "allow"
}

test_reads_are_not_gated_by_the_session if {
	decide(in_session("alice", "tickets.read", {}, after_pii)).outcome == "allow"
}

test_egress_without_a_session_needs_approval if {
	d := decide(req("alice", "web.post", {}))
	d.outcome == "needs_approval"
	codes(d) == {"egress_without_session"}
}

test_an_approval_by_a_manager_allows_the_egress if {
	inp := object.union(in_session("alice", "web.post", {}, after_pii), {"verified": {"approval": {
		"id": "apr_1", "state": "approved",
		"approver": {"id": "maria", "roles": ["support_manager"]},
		"single_use": true, "expires_at_ns": 1700000900000000000,
	}}})
	decide(inp).outcome == "allow"
}

test_an_approval_by_a_support_agent_does_not if {
	inp := object.union(in_session("alice", "web.post", {}, after_pii), {"verified": {"approval": {
		"id": "apr_1", "state": "approved",
		"approver": {"id": "sam", "roles": ["support_agent"]},
		"single_use": true, "expires_at_ns": 1700000900000000000,
	}}})
	decide(inp).outcome != "allow"
}

test_contractors_may_not_post if {
	d := decide(in_session("carol", "web.post", {}, fresh))
	d.outcome == "deny"
	"role_not_permitted" in codes(d)
}

# --- helpers ----------------------------------------------------------------------

windowed := object.union(fresh, {"tools": {"refunds.issue": {
	"allowed": 3,
	"in_window": {"60": 1, "3600": 2, "86400": 3},
	"sums": {"amount": {"60": 10, "3600": 30, "86400": 60}},
}}})

test_session_helpers if {
	data.toolgate.session_calls("refunds.issue") == 3 with input as {"verified": {"session": windowed}}
	data.toolgate.session_count("refunds.issue", 3600) == 2 with input as {"verified": {"session": windowed}}
	data.toolgate.session_sum("refunds.issue", "amount", 86400) == 60 with input as {"verified": {"session": windowed}}
	data.toolgate.session_sum("refunds.issue", "fee", 60) == 0 with input as {"verified": {"session": windowed}}
	data.toolgate.session_count("tickets.read", 60) == 0 with input as {"verified": {"session": windowed}}
	data.toolgate.session_touched("customer_pii") with input as {"verified": {"session": after_pii}}
	not data.toolgate.session_touched("customer_pii") with input as {"verified": {"session": fresh}}
	data.toolgate.session_calls("x") == 0 with input as {}
}
