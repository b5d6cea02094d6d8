# Tests for the decision core against the support-triage reference deployment.
# Not part of the bundle (scripts/policy.mjs ignores *_test.rego).
package toolgate.tests

import rego.v1

# --- builders ------------------------------------------------------------------

job := {"id": "job_1", "purpose": "support_triage", "customer_id": "cust_1"}

cust1 := {"type": "customer", "id": "cust_1"}

now := 1700000000000000000

req(who, tool, args) := {
	"request": {
		"subject": {"type": "user", "id": who},
		"action": {"name": tool, "properties": {"arguments": args}},
		"resource": cust1,
		"context": {"job": job},
	},
	"verified": {
		"agent": {"id": "support-triage"},
		"subject": {"id": who, "method": "trusted"},
		"time_ns": now,
	},
}

# object.union merges recursively: patch only what a test changes.
patched(who, tool, args, patch) := object.union(req(who, tool, args), patch)

on_resource(who, tool, args, resource) := r if {
	base := req(who, tool, args)
	r := {"request": object.union(object.remove(base.request, ["resource"]), {"resource": resource}), "verified": base.verified}
}

with_approval(who, tool, args, approval) := patched(who, tool, args, {"verified": {"approval": approval}})

approval_by(id, roles) := {
	"id": "apr_1",
	"state": "approved",
	"approver": {"id": id, "roles": roles},
	"single_use": true,
	"expires_at_ns": now + 900000000000,
}

decide(inp) := d if {
	d := data.toolgate.decision with input as inp
}

codes(d) := {r.code | some r in d.reasons}

deployment := data.toolgate.deployment

with_tool(name, entry) := object.union(deployment.tools, {name: entry})

# --- reference table: reads and drafts --------------------------------------------

test_tickets_read_allow if {
	d := decide(req("alice", "tickets.read", {}))
	d.outcome == "allow"
	codes(d) == {"granted"}
	d.obligations == []
	d.tool == {"name": "tickets.read", "class": "read", "stage": "autonomous"}
	not d.approval
}

test_accounts_summary_read_allow_with_redact_obligation if {
	d := decide(req("sam", "accounts.summary.read", {}))
	d.outcome == "allow"
	count(d.obligations) == 1
	o := d.obligations[0]
	o.type == "redact"
	o.id == "redact-payment-fields"
	"payment.card_number" in o.properties.fields
}

test_replies_draft_allow if {
	d := decide(req("carol", "replies.draft", {"text": "hi"}))
	d.outcome == "allow"
	d.tool.class == "draft"
}

test_read_other_customer_out_of_scope if {
	d := decide(on_resource("alice", "tickets.read", {}, {"type": "customer", "id": "cust_2"}))
	d.outcome == "deny"
	codes(d) == {"out_of_scope"}
	d.obligations == []
}

test_ticket_resource_uses_properties_customer_id if {
	decide(on_resource("alice", "tickets.read", {}, {
		"type": "ticket", "id": "t_9",
		"properties": {"customer_id": "cust_1"},
	})).outcome == "allow"
	codes(decide(on_resource("alice", "tickets.read", {}, {
		"type": "ticket", "id": "t_9",
		"properties": {"customer_id": "cust_2"},
	}))) == {"out_of_scope"}
}

test_resource_without_customer_is_out_of_scope if {
	codes(decide(on_resource("alice", "tickets.read", {}, {"type": "ticket", "id": "t_9"}))) == {"out_of_scope"}
	codes(decide(on_resource("alice", "tickets.read", {}, "cust_1"))) == {"out_of_scope"}
	codes(decide(on_resource("alice", "tickets.read", {}, {"type": "customer"}))) == {"out_of_scope"}
}

test_data_boundary_none if {
	rules := object.union(deployment.tool_rules, {"tickets.read": {"data_boundary": "none"}})
	d := decide(on_resource("alice", "tickets.read", {}, {"type": "customer", "id": "cust_2"})) with data.toolgate.deployment.tool_rules as rules
	d.outcome == "allow"
}

test_custom_customer_resource_types if {
	b := {"default": "job_customer", "customer_resource_types": ["account"]}
	d := decide(on_resource("alice", "tickets.read", {}, {"type": "account", "id": "cust_1"})) with data.toolgate.deployment.data_boundary as b
	d.outcome == "allow"
}

# --- replies.send (supervised) -------------------------------------------------------

test_replies_send_needs_approval if {
	d := decide(req("alice", "replies.send", {"text": "hello"}))
	d.outcome == "needs_approval"
	codes(d) == {"approval_required"}
	d.approval == {
		"approver_roles": ["support_agent", "support_manager"],
		"single_use": true,
		"ttl_seconds": 900,
		"exclude": ["alice", "support-triage"],
	}
	d.tool.stage == "supervised"
}

test_replies_send_approved_by_other_agent if {
	d := decide(with_approval("alice", "replies.send", {"text": "hello"}, approval_by("sam", ["support_agent"])))
	d.outcome == "allow"
	codes(d) == {"approved", "granted"}
	not d.approval
}

test_replies_send_approved_by_manager if {
	d := decide(with_approval("alice", "replies.send", {}, approval_by("maria", ["support_manager"])))
	d.outcome == "allow"
}

test_initiator_cannot_approve if {
	d := decide(with_approval("alice", "replies.send", {}, approval_by("alice", ["support_agent"])))
	d.outcome == "needs_approval"
	codes(d) == {"approval_required", "approval_invalid"}
}

test_agent_cannot_approve if {
	d := decide(with_approval("alice", "replies.send", {}, approval_by("support-triage", ["support_manager"])))
	d.outcome == "needs_approval"
}

# --- refunds.issue -------------------------------------------------------------------

test_refund_up_to_50_allow if {
	decide(req("alice", "refunds.issue", {"amount": 50})).outcome == "allow"
	decide(req("alice", "refunds.issue", {"amount": 0})).outcome == "allow"
	decide(req("maria", "refunds.issue", {"amount": 12.5, "currency": "EUR"})).outcome == "allow"
}

test_refund_above_50_needs_manager if {
	d := decide(req("alice", "refunds.issue", {"amount": 50.01}))
	d.outcome == "needs_approval"
	codes(d) == {"approval_required"}
	d.approval == {
		"approver_roles": ["support_manager"],
		"single_use": true,
		"ttl_seconds": 900,
		"exclude": ["alice", "support-triage"],
	}
	decide(req("alice", "refunds.issue", {"amount": 5000})).outcome == "needs_approval"
}

test_refund_above_5000_limit_exceeded if {
	d := decide(req("alice", "refunds.issue", {"amount": 5000.01}))
	d.outcome == "deny"
	codes(d) == {"limit_exceeded"}
	not d.approval
}

test_refund_contractor_role_not_permitted if {
	d := decide(req("carol", "refunds.issue", {"amount": 10}))
	d.outcome == "deny"
	codes(d) == {"role_not_permitted"}
}

test_caller_asserted_roles_are_ignored if {
	inp := patched("carol", "refunds.issue", {"amount": 10}, {"request": {"subject": {"properties": {
		"roles": ["support_manager"],
		"role": "support_manager",
	}}}})
	inp.request.subject.properties.roles == ["support_manager"]
	d := decide(inp)
	d.outcome == "deny"
	codes(d) == {"role_not_permitted"}
}

test_caller_asserted_subject_is_not_the_verified_one if {
	inp := patched("carol", "refunds.issue", {"amount": 10}, {"request": {"subject": {"id": "maria"}}})
	d := decide(inp)
	d.outcome == "deny"
	codes(d) == {"role_not_permitted", "subject_mismatch"}
}

test_refund_manager_approval if {
	d := decide(with_approval("sam", "refunds.issue", {"amount": 300}, approval_by("maria", ["support_manager"])))
	d.outcome == "allow"
	codes(d) == {"approved", "granted"}
}

test_refund_agent_role_cannot_approve_refund if {
	d := decide(with_approval("alice", "refunds.issue", {"amount": 300}, approval_by("sam", ["support_agent"])))
	d.outcome == "needs_approval"
	some r in d.reasons
	r.code == "approval_invalid"
	contains(r.message, "required roles")
}

test_approval_never_overrides_deny if {
	d := decide(with_approval("alice", "refunds.issue", {"amount": 9000}, approval_by("maria", ["support_manager"])))
	d.outcome == "deny"
	codes(d) == {"limit_exceeded"}
}

test_expired_approval if {
	a := object.union(approval_by("maria", ["support_manager"]), {"expires_at_ns": now - 1})
	d := decide(with_approval("alice", "refunds.issue", {"amount": 300}, a))
	d.outcome == "needs_approval"
	codes(d) == {"approval_required", "approval_invalid"}
}

test_approval_expiry_must_be_a_number if {
	a := object.union(approval_by("maria", ["support_manager"]), {"expires_at_ns": "never"})
	decide(with_approval("alice", "refunds.issue", {"amount": 300}, a)).outcome == "needs_approval"
}

test_approval_not_approved_state if {
	a := object.union(approval_by("maria", ["support_manager"]), {"state": "pending"})
	decide(with_approval("alice", "refunds.issue", {"amount": 300}, a)).outcome == "needs_approval"
}

test_execute_class_needs_single_use_approval if {
	a := object.union(approval_by("maria", ["support_manager"]), {"single_use": false})
	decide(with_approval("alice", "refunds.issue", {"amount": 300}, a)).outcome == "needs_approval"
}

test_approval_without_approver_id if {
	a := {"state": "approved", "approver": {"roles": ["support_manager"]}, "single_use": true, "expires_at_ns": now + 1}
	decide(with_approval("alice", "refunds.issue", {"amount": 300}, a)).outcome == "needs_approval"
}

test_malformed_approval_is_ignored if {
	d := decide(with_approval("alice", "refunds.issue", {"amount": 300}, "yes"))
	d.outcome == "needs_approval"
	codes(d) == {"approval_required"}
}

test_approval_on_allowed_request_is_harmless if {
	d := decide(with_approval("alice", "tickets.read", {}, approval_by("maria", ["support_manager"])))
	d.outcome == "allow"
	codes(d) == {"granted"}
}

test_missing_time_uses_clock if {
	a := object.union(approval_by("maria", ["support_manager"]), {"expires_at_ns": 4000000000000000000})
	inp := with_approval("alice", "refunds.issue", {"amount": 300}, a)
	d := decide({"request": inp.request, "verified": object.remove(inp.verified, ["time_ns"])})
	d.outcome == "allow"
}

# --- denied tools ----------------------------------------------------------------------

test_billing_update_not_granted if {
	d := decide(req("alice", "billing.update", {"plan": "pro"}))
	d.outcome == "deny"
	"not_granted" in codes(d)
}

test_records_delete_denied if {
	d := decide(req("maria", "records.delete", {}))
	d.outcome == "deny"
	"not_granted" in codes(d)
	d.tool.class == "admin"
}

test_message_all_never_in_triage_job if {
	d := decide(req("maria", "customers.message_all", {"text": "sale!"}))
	d.outcome == "deny"
	"purpose_not_permitted" in codes(d)
}

test_unknown_tool if {
	d := decide(req("alice", "shell.exec", {"cmd": "rm -rf /"}))
	d.outcome == "deny"
	codes(d) == {"unknown_tool"}
	d.tool == {"name": "shell.exec", "class": null, "stage": null}
}

test_any_tool_other_customer_out_of_scope if {
	d := decide(on_resource("maria", "refunds.issue", {"amount": 300}, {"type": "customer", "id": "cust_2"}))
	d.outcome == "deny"
	codes(d) == {"out_of_scope"}
	not d.approval
}

# --- containment ----------------------------------------------------------------------

test_tool_disabled if {
	tools := with_tool("tickets.read", {"class": "read", "stage": "disabled"})
	d := decide(req("alice", "tickets.read", {})) with data.toolgate.deployment.tools as tools
	d.outcome == "deny"
	codes(d) == {"tool_disabled"}
	d.tool.stage == "disabled"
}

test_agent_disabled if {
	agents := {"support-triage": object.union(deployment.agents["support-triage"], {"enabled": false})}
	d := decide(req("alice", "tickets.read", {})) with data.toolgate.deployment.agents as agents
	d.outcome == "deny"
	codes(d) == {"agent_disabled"}
}

# enabled must be exactly true (a missing flag: test_agent_without_enabled_flag_is_disabled
# in rules_test.rego; `with` on a data path merges into the base object, so it cannot remove keys).
test_agent_enabled_must_be_true if {
	agents := {"support-triage": {"enabled": "yes", "grants": deployment.agents["support-triage"].grants}}
	codes(decide(req("alice", "tickets.read", {}))) == {"agent_disabled"} with data.toolgate.deployment.agents as agents
}

test_unknown_agent if {
	inp := patched("alice", "tickets.read", {}, {"verified": {"agent": {"id": "other-agent"}}})
	codes(decide(inp)) == {"unknown_agent"}
}

test_stage_shadow if {
	tools := with_tool("refunds.issue", {"class": "execute", "stage": "shadow"})
	d := decide(req("alice", "refunds.issue", {"amount": 1})) with data.toolgate.deployment.tools as tools
	codes(d) == {"shadow_mode"}
	d.outcome == "deny"

	# what draft_only (the next stage) would have answered: an execute tool may not act
	d.shadow.outcome == "deny"
	codes(d.shadow) == {"stage_draft_only"}
}

test_stage_shadow_of_a_draft_tool_records_allow if {
	tools := with_tool("replies.draft", {"class": "draft", "stage": "shadow"})
	d := decide(req("alice", "replies.draft", {})) with data.toolgate.deployment.tools as tools
	codes(d) == {"shadow_mode"}
	d.shadow.outcome == "allow"
}

test_stage_shadow_as_supervised if {
	tools := with_tool("refunds.issue", {"class": "execute", "stage": "shadow", "shadow_as": "supervised"})
	d := decide(req("alice", "refunds.issue", {"amount": 1})) with data.toolgate.deployment.tools as tools
	codes(d) == {"shadow_mode"}
	d.shadow.outcome == "needs_approval"
}

test_no_shadow_member_outside_shadow_stage if {
	d := decide(req("alice", "refunds.issue", {"amount": 1}))
	not d.shadow
}

test_stage_draft_only if {
	tools := with_tool("refunds.issue", {"class": "execute", "stage": "draft_only"})
	codes(decide(req("alice", "refunds.issue", {"amount": 1}))) == {"stage_draft_only"} with data.toolgate.deployment.tools as tools
	reads := with_tool("tickets.read", {"class": "read", "stage": "draft_only"})
	decide(req("alice", "tickets.read", {})).outcome == "allow" with data.toolgate.deployment.tools as reads
}

test_invalid_stage_fails_closed if {
	tools := with_tool("tickets.read", {"class": "read", "stage": "on"})
	d := decide(req("alice", "tickets.read", {})) with data.toolgate.deployment.tools as tools
	codes(d) == {"tool_disabled"}
	d.tool.stage == null
}

test_invalid_class_fails_closed if {
	tools := with_tool("tickets.read", {"class": "superuser", "stage": "autonomous"})
	codes(decide(req("alice", "tickets.read", {}))) == {"unknown_tool"} with data.toolgate.deployment.tools as tools
}

test_no_deployment_denies if {
	d := decide(req("alice", "tickets.read", {})) with data.toolgate.deployment as "broken"
	d.outcome == "deny"
	codes(d) == {"unknown_agent", "unknown_subject", "unknown_tool"}
}

# --- subjects, purposes, grants ------------------------------------------------------------

test_unknown_subject if {
	codes(decide(req("mallory", "tickets.read", {}))) == {"unknown_subject"}
}

test_unverified_subject if {
	inp := {"request": req("alice", "tickets.read", {}).request, "verified": {"agent": {"id": "support-triage"}}}
	d := decide(inp)
	d.outcome == "deny"
	"unknown_subject" in codes(d)
}

test_wrong_purpose if {
	inp := patched("alice", "tickets.read", {}, {"request": {"context": {"job": {"purpose": "marketing"}}}})
	codes(decide(inp)) == {"purpose_not_permitted"}
}

test_tool_granted_for_other_purpose_only if {
	agents := {"support-triage": {"enabled": true, "grants": [
		{"purpose": "support_triage", "tools": ["tickets.read"]},
		{"purpose": "escalation", "tools": ["replies.draft"]},
	]}}
	codes(decide(req("alice", "replies.draft", {}))) == {"purpose_not_permitted"} with data.toolgate.deployment.agents as agents
}

# --- malformed input --------------------------------------------------------------------

test_empty_input if {
	d := decide({})
	d.outcome == "deny"
	codes(d) == {"missing_job", "unknown_agent", "unknown_subject", "unknown_tool"}
	d.obligations == []
	not d.tool
}

test_non_object_inputs if {
	decide("x").outcome == "deny"
	decide([1, 2]).outcome == "deny"
	decide(null).outcome == "deny"
	decide({"request": "x", "verified": 7}).outcome == "deny"
}

test_no_input_at_all if {
	data.toolgate.decision.outcome == "deny"
}

test_missing_job if {
	base := req("alice", "tickets.read", {})
	inp := {"request": object.remove(base.request, ["context"]), "verified": base.verified}
	d := decide(inp)
	d.outcome == "deny"
	codes(d) == {"missing_job"}
}

test_job_without_customer if {
	inp := patched("alice", "tickets.read", {}, {"request": {"context": {"job": {"customer_id": 7}}}})
	codes(decide(inp)) == {"missing_job"}
}

# Job-scoped switches, limits and budgets key on job.id: a job without one
# (missing, empty, or not a string) is no job.
test_job_without_id if {
	base := req("alice", "tickets.read", {})
	inp := {"request": object.union(object.remove(base.request, ["context"]), {"context": {"job": object.remove(job, ["id"])}}), "verified": base.verified}
	codes(decide(inp)) == {"missing_job"}
}

test_job_with_empty_id if {
	inp := patched("alice", "tickets.read", {}, {"request": {"context": {"job": {"id": ""}}}})
	codes(decide(inp)) == {"missing_job"}
}

test_job_with_blank_or_padded_id if {
	codes(decide(patched("alice", "tickets.read", {}, {"request": {"context": {"job": {"id": " \t "}}}}))) == {"missing_job"}
	codes(decide(patched("alice", "tickets.read", {}, {"request": {"context": {"job": {"id": "job_1 "}}}}))) == {"missing_job"}
}

test_job_with_non_string_id if {
	inp := patched("alice", "refunds.issue", {"amount": 20}, {"request": {"context": {"job": {"id": 1}}}})
	codes(decide(inp)) == {"missing_job"}
}

test_amount_not_a_number if {
	d := decide(req("alice", "refunds.issue", {"amount": "10"}))
	d.outcome == "deny"
	codes(d) == {"invalid_arguments"}
}

test_amount_missing if {
	codes(decide(req("alice", "refunds.issue", {}))) == {"invalid_arguments"}
}

test_amount_negative if {
	codes(decide(req("alice", "refunds.issue", {"amount": -5}))) == {"invalid_arguments"}
}

test_arguments_not_an_object if {
	codes(decide(req("alice", "tickets.read", "all"))) == {"invalid_arguments"}
	codes(decide(req("alice", "refunds.issue", [100]))) == {"invalid_arguments"}
}

test_argument_types if {
	codes(decide(req("alice", "refunds.issue", {"amount": 1, "currency": 978}))) == {"invalid_arguments"}
}

test_tool_name_not_a_string if {
	d := decide(req("alice", 42, {}))
	codes(d) == {"unknown_tool"}
	not d.tool
}

# --- precedence and determinism --------------------------------------------------------

test_deny_wins_over_needs_approval if {
	# needs approval (amount > 50) but also out of scope and not the verified subject
	inp := on_resource("alice", "refunds.issue", {"amount": 100}, {"type": "customer", "id": "cust_2"})
	d := decide(inp)
	d.outcome == "deny"
	not d.approval
}

test_reasons_are_sorted if {
	d := decide({})
	d.reasons == sort(d.reasons)
	count(d.reasons) > 1
}

test_every_outcome_has_reasons if {
	count(decide(req("alice", "tickets.read", {})).reasons) > 0
	count(decide(req("alice", "replies.send", {})).reasons) > 0
	count(decide(req("alice", "nope", {})).reasons) > 0
}
