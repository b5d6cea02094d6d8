# Tests for the generic data-driven parts (approval rules, limits, argument
# schemas) with deployments other than the reference one.
package toolgate.tests.rules

import rego.v1

inp(args) := {
	"request": {
		"subject": {"type": "user", "id": "u1"},
		"action": {"name": "t.act", "properties": {"arguments": args}},
		"resource": {"type": "order", "id": "o1", "properties": {"customer_id": "c1"}},
		"context": {"job": {"id": "j", "purpose": "p", "customer_id": "c1"}},
	},
	"verified": {"agent": {"id": "a1"}, "subject": {"id": "u1", "method": "jwt"}, "time_ns": 10},
}

dep(rule, stage) := {
	"tools": {"t.act": {"class": "execute", "stage": stage}},
	"users": {"u1": {"roles": ["r"]}},
	"roles": {"r": {"tools": ["t.act"]}},
	"agents": {"a1": {"enabled": true, "grants": [{"purpose": "p", "tools": ["t.act"]}]}},
	"tool_rules": {"t.act": rule},
}

decide(args, rule, stage) := d if {
	d := data.toolgate.decision with input as inp(args) with data.toolgate.deployment as dep(rule, stage)
}

codes(d) := {r.code | some r in d.reasons}

test_minimal_deployment_allows if {
	d := decide({}, {}, "autonomous")
	d.outcome == "allow"
	codes(d) == {"granted"}
}

test_rule_without_condition_always_applies if {
	rule := {"approvals": [{"id": "always", "approver_roles": ["boss"], "single_use": false, "ttl_seconds": 60}]}
	d := decide({}, rule, "autonomous")
	d.outcome == "needs_approval"
	d.approval == {"approver_roles": ["boss"], "single_use": false, "ttl_seconds": 60, "exclude": ["u1", "a1"]}
}

test_supervised_without_config_uses_no_roles_and_is_unsatisfiable if {
	d := decide({}, {}, "supervised")
	d.outcome == "deny"
	codes(d) == {"approval_unsatisfiable"}
}

test_approval_defaults if {
	rule := {"approvals": [{"when": {"argument": "n", "gte": 10}}]}
	defaults := {"approver_roles": ["lead"], "ttl_seconds": 30, "single_use_classes": ["admin"]}
	d := data.toolgate.decision with input as inp({"n": 10})
		with data.toolgate.deployment as object.union(dep(rule, "autonomous"), {"approval_defaults": defaults})
	d.outcome == "needs_approval"
	d.approval.approver_roles == ["lead"]
	d.approval.ttl_seconds == 30
	d.approval.single_use == false
	some r in d.reasons
	r.message == "argument 'n' >= 10 needs an approval (rule 'approval')"
}

test_conditions_combine if {
	rule := {"approvals": [{"id": "band", "when": {"argument": "n", "gt": 1, "lte": 5}, "approver_roles": ["x"]}]}
	decide({"n": 1}, rule, "autonomous").outcome == "allow"
	decide({"n": 3}, rule, "autonomous").outcome == "needs_approval"
	decide({"n": 6}, rule, "autonomous").outcome == "allow"
}

test_condition_lt if {
	rule := {"approvals": [{"id": "low", "when": {"argument": "n", "lt": 0}, "approver_roles": ["x"]}]}
	decide({"n": -1}, rule, "autonomous").outcome == "needs_approval"
	decide({"n": 0}, rule, "autonomous").outcome == "allow"
}

test_condition_gte_boundary if {
	rule := {"approvals": [{"id": "big", "when": {"argument": "n", "gte": 5}, "approver_roles": ["x"]}]}
	decide({"n": 4.99}, rule, "autonomous").outcome == "allow"
	decide({"n": 5}, rule, "autonomous").outcome == "needs_approval"
}

test_condition_on_missing_argument_fails_closed if {
	rule := {"approvals": [{"id": "big", "when": {"argument": "n", "gt": 5}, "approver_roles": ["x"]}]}
	codes(decide({}, rule, "autonomous")) == {"invalid_arguments"}
	codes(decide({"n": "9"}, rule, "autonomous")) == {"invalid_arguments"}
}

test_invalid_condition_is_a_configuration_error if {
	rule := {"approvals": [{"id": "bad", "when": {"argument": "n", "above": 5}, "approver_roles": ["x"]}]}
	codes(decide({"n": 1}, rule, "autonomous")) == {"invalid_configuration"}
}

test_supervised_and_rule_intersect_roles if {
	rule := {
		"supervision": {"approver_roles": ["a", "b"]},
		"approvals": [{"id": "big", "when": {"argument": "n", "gt": 5}, "approver_roles": ["b", "c"], "ttl_seconds": 60}],
	}
	d := decide({"n": 9}, rule, "supervised")
	d.outcome == "needs_approval"
	d.approval.approver_roles == ["b"]
	d.approval.ttl_seconds == 60
	count(d.reasons) == 2
}

test_disjoint_approver_roles_unsatisfiable if {
	rule := {
		"supervision": {"approver_roles": ["a"]},
		"approvals": [{"id": "big", "when": {"argument": "n", "gt": 5}, "approver_roles": ["c"]}],
	}
	codes(decide({"n": 9}, rule, "supervised")) == {"approval_unsatisfiable"}
}

test_limit_min if {
	rule := {"limits": [{"argument": "n", "min": 1, "max": 3}]}
	codes(decide({"n": 0}, rule, "autonomous")) == {"limit_exceeded"}
	decide({"n": 2}, rule, "autonomous").outcome == "allow"
	codes(decide({"n": 4}, rule, "autonomous")) == {"limit_exceeded"}
	codes(decide({}, rule, "autonomous")) == {"invalid_arguments"}
}

test_schema_types if {
	rule := {"arguments": {
		"b": {"type": "boolean"},
		"o": {"type": "object"},
		"a": {"type": "array"},
		"s": {"type": "string", "required": true},
	}}
	decide({"b": true, "o": {}, "a": [], "s": ""}, rule, "autonomous").outcome == "allow"
	codes(decide({"b": 1, "s": "x"}, rule, "autonomous")) == {"invalid_arguments"}
	codes(decide({"o": [], "s": "x"}, rule, "autonomous")) == {"invalid_arguments"}
	codes(decide({"a": {}, "s": "x"}, rule, "autonomous")) == {"invalid_arguments"}
	codes(decide({}, rule, "autonomous")) == {"invalid_arguments"}
}

test_non_execute_class_approval_not_single_use_by_default if {
	rule := {"approvals": [{"id": "always", "approver_roles": ["boss"]}]}
	deployment := object.union(dep(rule, "autonomous"), {"tools": {"t.act": {"class": "draft", "stage": "autonomous"}}})
	d := data.toolgate.decision with input as inp({}) with data.toolgate.deployment as deployment
	d.approval.single_use == false
	d.approval.ttl_seconds == 900
}

test_non_single_use_approval_accepted_when_allowed if {
	rule := {"approvals": [{"id": "always", "approver_roles": ["boss"], "single_use": false}]}
	approval := {
		"id": "ap", "state": "approved", "single_use": false, "expires_at_ns": 11,
		"approver": {"id": "b1", "roles": ["boss"]},
	}
	i := object.union(inp({}), {"verified": {"approval": approval}})
	d := data.toolgate.decision with input as i with data.toolgate.deployment as dep(rule, "autonomous")
	d.outcome == "allow"
}

test_obligations_only_when_not_denied if {
	rule := {"obligations": [{"id": "r", "type": "redact", "properties": {"fields": ["x"]}}, "junk"]}
	decide({}, rule, "autonomous").obligations == [{"id": "r", "type": "redact", "properties": {"fields": ["x"]}}]
	decide({}, rule, "disabled").obligations == []
}

test_agent_without_any_grant_for_purpose if {
	deployment := object.union(dep({}, "autonomous"), {"agents": {"a1": {"enabled": true, "grants": "all"}}})
	d := data.toolgate.decision with input as inp({}) with data.toolgate.deployment as deployment
	codes(d) == {"not_granted", "purpose_not_permitted"}
}

test_agent_without_enabled_flag if {
	deployment := object.union(dep({}, "autonomous"), {"agents": {"a1": {"grants": [{"purpose": "p", "tools": ["t.act"]}]}}})
	d := data.toolgate.decision with input as inp({}) with data.toolgate.deployment as object.remove(deployment, ["agents"])
	codes(d) == {"unknown_agent"}
}

test_agent_without_enabled_flag_is_disabled if {
	deployment := object.union(object.remove(dep({}, "autonomous"), ["agents"]), {"agents": {"a1": {"grants": [{"purpose": "p", "tools": ["t.act"]}]}}})
	d := data.toolgate.decision with input as inp({}) with data.toolgate.deployment as deployment
	codes(d) == {"agent_disabled"}
}

test_draft_only_stage_blocks_approve_and_admin_classes if {
	approve := object.union(dep({}, "draft_only"), {"tools": {"t.act": {"class": "approve", "stage": "draft_only"}}})
	codes(data.toolgate.decision) == {"stage_draft_only"} with input as inp({}) with data.toolgate.deployment as approve
	admin := object.union(dep({}, "draft_only"), {"tools": {"t.act": {"class": "admin", "stage": "draft_only"}}})
	codes(data.toolgate.decision) == {"stage_draft_only"} with input as inp({}) with data.toolgate.deployment as admin
}

test_supervision_that_is_not_an_object_is_unsatisfiable if {
	codes(decide({}, {"supervision": "x"}, "supervised")) == {"approval_unsatisfiable"}
}

test_approval_without_approver if {
	rule := {"approvals": [{"id": "always", "approver_roles": ["boss"]}]}
	approval := {"id": "ap", "state": "approved", "single_use": true, "expires_at_ns": 11}
	i := object.union(inp({}), {"verified": {"approval": approval}})
	d := data.toolgate.decision with input as i with data.toolgate.deployment as dep(rule, "autonomous")
	d.outcome == "needs_approval"
	codes(d) == {"approval_required", "approval_invalid"}
}

test_boundary_defaults_to_job_customer if {
	i := object.union(inp({}), {"request": {"resource": {"properties": {"customer_id": "c2"}}}})
	codes(data.toolgate.decision) == {"out_of_scope"} with input as i with data.toolgate.deployment as dep({}, "autonomous")
}
