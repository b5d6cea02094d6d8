# Tests of this deployment: its data (toolgate/deployment/data.json) and its
# rules (rules.rego) with toolgate's library, session rules included.
# `toolgate policy test` runs them.
package toolgate_test

import rego.v1

job := {"id": "job_1", "purpose": "support", "customer_id": "cust_1"}

now := 1700000000000000000

# A decision request as toolgate gives it to the policy: the request as the
# agent sent it, and what toolgate verified (agent, subject, time, approval).
req(who, tool, args) := {
	"request": {
		"subject": {"type": "user", "id": who},
		"action": {"name": tool, "properties": {"arguments": args}},
		"resource": {"type": "customer", "id": "cust_1"},
		"context": {"job": job},
	},
	"verified": {
		"agent": {"id": "my-agent"},
		"subject": {"id": who, "method": "trusted"},
		"time_ns": now,
	},
}

approved_by(who, tool, args, approver, roles) := object.union(req(who, tool, args), {"verified": {"approval": {
	"id": "apr_1",
	"state": "approved",
	"approver": {"id": approver, "roles": roles},
	"single_use": true,
	"expires_at_ns": now + 900000000000,
}}})

codes(d) := {r.code | some r in d.reasons}

# --- allow -----------------------------------------------------------------------

test_read_allowed if {
	d := data.toolgate.decision with input as req("alice", "tickets.read", {})
	d.outcome == "allow"
	codes(d) == {"granted"}
}

test_small_refund_allowed if {
	every c in ["EUR", "USD"] {
		d := data.toolgate.decision with input as req("alice", "refunds.issue", {"amount": 20, "currency": c})
		d.outcome == "allow"
	}
}

# --- needs_approval --------------------------------------------------------------

test_large_refund_needs_a_manager if {
	d := data.toolgate.decision with input as req("alice", "refunds.issue", {"amount": 250, "currency": "EUR"})
	d.outcome == "needs_approval"
	codes(d) == {"approval_required"}
	d.approval.approver_roles == ["support_manager"]
	d.approval.single_use == true
}

test_large_refund_approved_by_a_manager if {
	inp := approved_by("alice", "refunds.issue", {"amount": 250, "currency": "EUR"}, "maria", ["support_manager"])
	d := data.toolgate.decision with input as inp
	d.outcome == "allow"
	codes(d) == {"approved", "granted"}
}

test_approval_by_the_wrong_role_is_not_enough if {
	inp := approved_by("alice", "refunds.issue", {"amount": 250, "currency": "EUR"}, "carol", ["contractor"])
	d := data.toolgate.decision with input as inp
	d.outcome == "needs_approval"
	"approval_invalid" in codes(d)
}

test_supervised_send_needs_approval if {
	d := data.toolgate.decision with input as req("alice", "replies.send", {"text": "hello"})
	d.outcome == "needs_approval"
}

# --- deny ------------------------------------------------------------------------

test_refund_above_the_limit_denied if {
	d := data.toolgate.decision with input as req("alice", "refunds.issue", {"amount": 5000, "currency": "EUR"})
	d.outcome == "deny"
	codes(d) == {"limit_exceeded"}
}

test_refund_in_another_currency_denied if {
	d := data.toolgate.decision with input as req("alice", "refunds.issue", {"amount": 20, "currency": "XYZ"})
	d.outcome == "deny"
	codes(d) == {"invalid_arguments"}
}

test_contractor_may_not_refund if {
	d := data.toolgate.decision with input as req("carol", "refunds.issue", {"amount": 20, "currency": "EUR"})
	d.outcome == "deny"
	"role_not_permitted" in codes(d)
}

test_disabled_tool_denied if {
	d := data.toolgate.decision with input as req("maria", "records.delete", {})
	d.outcome == "deny"
	"tool_disabled" in codes(d)
}

test_unknown_tool_denied if {
	d := data.toolgate.decision with input as req("alice", "shell.exec", {})
	d.outcome == "deny"
	codes(d) == {"unknown_tool"}
}

test_other_customer_out_of_scope if {
	inp := object.union(req("alice", "tickets.read", {}), {"request": {"resource": {"id": "cust_2"}}})
	d := data.toolgate.decision with input as inp
	d.outcome == "deny"
	codes(d) == {"out_of_scope"}
}

# --- the session: egress after a sensitive read --------------------------------------

# what toolgate tells the policy about the session so far (it keeps it; the agent cannot assert it)
in_session(who, tool, labels) := object.union(req(who, tool, {}), {
	"request": {"context": {"session": {"id": "s-1"}}},
	"verified": {"session": {"id": "s-1", "tools": {}, "labels": labels}},
})

read_pii := {"customer_pii": {"count": 1, "tools": ["tickets.read"], "last_decision_id": "dec_1"}}

test_egress_allowed_in_a_session_that_read_nothing_sensitive if {
	d := data.toolgate.decision with input as in_session("alice", "web.post", {})
	d.outcome == "allow"
}

test_egress_after_reading_customer_pii_needs_a_manager if {
	d := data.toolgate.decision with input as in_session("alice", "web.post", read_pii)
	d.outcome == "needs_approval"
	codes(d) == {"egress_after_sensitive_read"}
	d.approval.approver_roles == ["support_manager"]
}

test_egress_without_a_session_needs_approval if {
	d := data.toolgate.decision with input as req("alice", "web.post", {})
	d.outcome == "needs_approval"
	codes(d) == {"egress_without_session"}
}

# --- the data itself ---------------------------------------------------------------

deployment := data.toolgate.deployment

classes := {"read", "draft", "approve", "execute", "admin"}

stages := {"disabled", "shadow", "draft_only", "supervised", "autonomous"}

test_every_tool_has_a_class_and_a_stage if {
	every name, t in deployment.tools {
		is_string(name)
		t.class in classes
		t.stage in stages
	}
}

test_every_granted_or_role_tool_is_registered if {
	every _, a in deployment.agents {
		every g in a.grants {
			every name in g.tools {
				deployment.tools[name]
			}
		}
	}
	every _, r in deployment.roles {
		every name in r.tools {
			deployment.tools[name]
		}
	}
}

test_labels_and_egress_are_well_formed if {
	every _, t in deployment.tools {
		is_boolean(object.get(t, "egress", false))
		every label in object.get(t, "reads", []) {
			deployment.labels[label]
		}
	}
}
