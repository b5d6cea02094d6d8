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

# The decision document (see docs/policy-contract.md).
decision := object.union(core_decision, shadow_part)

# The answer without the shadow member.
core_decision := object.union(
	{
		"outcome": outcome,
		"reasons": reasons,
		"obligations": obligations,
	},
	object.union(tool_part, approval_part),
)

# Stage shadow: the decision the tool's next stage (draft_only, or the tool's
# `shadow_as`) would have made, for the record. toolgate records it and never
# returns it: the agent is told deny (shadow_mode).
shadow_part := {"shadow": {"outcome": d.outcome, "reasons": d.reasons}} if {
	tool_stage == "shadow"
	d := core_decision with data.toolgate.deployment.tools as shadow_tools
} else := {}

shadow_target := s if {
	s := tool.shadow_as
	s in {"draft_only", "supervised", "autonomous"}
} else := "draft_only"

shadow_tools := object.union(conf_tools, {tool_name: object.union(tool, {"stage": shadow_target})})

outcome := "deny" if {
	count(deny_reasons) > 0
} else := "needs_approval" if {
	approval_needed
	not approval_valid
} else := "allow"

reasons := sort(deny_reasons) if {
	outcome == "deny"
} else := sort(approval_reasons) if {
	outcome == "needs_approval"
} else := sort(allow_reasons)

approval_reasons contains reason("approval_required", r.message) if {
	some r in approval_requirements
}

approval_reasons contains reason("approval_invalid", concat("", ["the presented approval does not satisfy this request: ", p])) if {
	approval_present
	some p in approval_problems
}

allow_reasons contains reason("granted", concat("", [
	"tool ", q(tool_name), " is granted to agent ", q(agent_id),
	" for job purpose ", q(purpose), " on behalf of ", q(subject_id),
])) if {
	tool_name
}

allow_reasons contains reason("approved", concat("", ["approved by ", q(approver.id)])) if {
	approval_needed
	approval_valid
}

obligations := [o | some o in as_array(tool_rule.obligations); is_object(o)] if {
	outcome != "deny"
} else := []

tool_part := {"tool": {
	"name": tool_name,
	"class": tool_class_or_null,
	"stage": tool_stage_or_null,
}} if {
	tool_name
} else := {}

tool_class_or_null := c if {
	c := tool_class
} else := null

tool_stage_or_null := s if {
	s := tool_stage
} else := null

approval_part := {"approval": {
	"approver_roles": sort(required_roles),
	"single_use": required_single_use_value,
	"ttl_seconds": required_ttl_seconds,
	"exclude": approval_exclude,
}} if {
	outcome == "needs_approval"
} else := {}

required_single_use_value if required_single_use

else := false
