# METADATA
# title: toolgate decision core
# description: >-
#   Generic, data-driven decision for one tool call. The deployment (tool
#   registry, users, roles, agent grants, purposes, data boundary, approval
#   rules, obligations) lives in data.toolgate.deployment. Default deny.
#   Precedence: deny > needs_approval > allow. The entrypoint is
#   toolgate/decision and is defined for every input.
package toolgate

import rego.v1

# The decision document (see docs/policy-contract.md). The shadow member is
# computed only for a tool in stage shadow.
decision := object.union(core_decision, {"shadow": {"outcome": d.outcome, "reasons": d.reasons}}) if {
	tool_stage == "shadow"
	d := core_decision with data.toolgate.deployment.tools as shadow_tools
} else := answer(0)

# Stage shadow: the decision the tool's next stage (draft_only, or the tool's
# `shadow_as`) would have made, for the record. toolgate records it and never
# returns it: the agent is told deny (shadow_mode).
shadow_target := s if {
	s := tool.shadow_as
	s in {"draft_only", "supervised", "autonomous"}
} else := "draft_only"

shadow_tools := object.union(data.toolgate.deployment.tools, {tool_name: object.union(tool, {"stage": shadow_target})})

# The answer without the shadow member (what stage shadow records).
core_decision := answer(0)

# One object literal per outcome, each built only when it is the answer. A
# function, not a rule: it is evaluated once per decision either way, and a
# function skips the rule's memoisation.
answer(_) := {
	"outcome": "deny",
	"reasons": sort(deny_reasons),
	"obligations": [],
	"tool": {"name": tool_name, "class": class_or_null(0), "stage": stage_or_null(0)},
} if {
	count(deny_reasons) > 0
	tool_name
} else := {
	"outcome": "deny",
	"reasons": sort(deny_reasons),
	"obligations": [],
} if {
	count(deny_reasons) > 0
} else := {
	"outcome": "allow",
	"reasons": [granted(0)],
	"obligations": obligations(0),
	"tool": {"name": tool_name, "class": tool_class, "stage": tool_stage},
} if {
	count(approval_requirements) == 0
} else := {
	"outcome": "needs_approval",
	"reasons": sort(approval_reasons),
	"obligations": obligations(0),
	"tool": {"name": tool_name, "class": tool_class, "stage": tool_stage},
	"approval": {
		"approver_roles": sort(required_roles),
		"single_use": required_single_use_value,
		"ttl_seconds": required_ttl_seconds,
		"exclude": [subject_id, agent_id],
	},
} if {
	not approval_valid
} else := {
	"outcome": "allow",
	"reasons": [
		{"code": "approved", "message": concat("", ["approved by '", approver.id, "'"])},
		granted(0),
	],
	"obligations": obligations(0),
	"tool": {"name": tool_name, "class": tool_class, "stage": tool_stage},
}

# With no deny reason, the tool, agent, job and subject are all defined.
granted(_) := {"code": "granted", "message": concat("", [
	"tool '", tool_name, "' is granted to agent '", agent_id,
	"' for job purpose '", job.purpose, "' on behalf of '", subject_id, "'",
])}

approval_reasons contains {"code": requirement_code(r), "message": r.message} if {
	some r in approval_requirements
}

# A requirement names its reason code (e.g. egress_after_sensitive_read), else approval_required.
requirement_code(r) := r.code if is_string(r.code)

else := "approval_required"

approval_reasons contains {"code": "approval_invalid", "message": concat("", ["the presented approval does not satisfy this request: ", p])} if {
	approval
	some p in approval_problems
}

obligations(_) := [o | os := tool_rule.obligations; is_array(os); some o in os; is_object(o)]

class_or_null(_) := c if {
	c := tool_class
} else := null

stage_or_null(_) := s if {
	s := tool_stage
} else := null

required_single_use_value if required_single_use

else := false
